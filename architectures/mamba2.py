"""Mamba-2's SSD block (Dao & Gu 2024, "Transformers are SSMs").

in_proj -> (z, xBC, dt); xBC -> short depthwise causal conv -> SiLU -> (x, B, C); per head h a
scalar decay: S_t = exp(dt_t A_h) S_{t-1} + (dt_t B_t) x_t^T, y_t = S_t^T C_t + D_h x_t;
gated RMSNorm(y * SiLU(z)) -> out_proj. One group (B, C shared by the heads). Defaults are
the paper's with sizes scaled to small models: d_state 16 (paper 128), headdim 16 (paper 64),
expand 2, d_conv 4, A ~ U[1, 16], dt in [1e-3, 1e-1].
Reference path: the chunked SSD form (architectures.linear_recurrence.chunked_gla with a
scalar decay per head). Fast path on CUDA: mamba-ssm's `mamba_chunk_scan_combined`.
TSS per channel: d_state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import causal_conv, conv_step, init_step_sizes, require_divisible, require_positive
from architectures.kernels import cpu_path_allowed, optional_import, use_fast
from architectures.linear_recurrence import GatedLinearMixer, Heads, chunked_gla
from architectures.selective_scan import block_available, compiled_available, scan_block_compiled, selective_scan_compiled


class Mamba2(GatedLinearMixer):
    name = "mamba2"
    short_conv = True  # d_conv taps ahead of the SSM
    zoology_block = "mamba"  # zoology/mixers/mamba.py: Block, no state mixer

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,  # Dao & Gu 2024 use 128; scaled to d_model 64
        d_conv: int = 4,  # mamba-ssm Mamba2 default
        expand: int = 2,  # mamba-ssm Mamba2 default
        headdim: int = 16,  # paper 64; scaled so d_model 64 has 8 heads
        dt_min: float = 1e-3,  # mamba-ssm dt init range
        dt_max: float = 1e-1,
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        require_positive(self.name, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim)
        d_inner = expand * d_model
        require_divisible(self.name, "expand * d_model", d_inner, "headdim", headdim)
        self.d_inner, self.d_state, self.d_conv, self.headdim = d_inner, d_state, d_conv, headdim
        self.num_heads = d_inner // headdim
        self.key_dim, self.value_dim = d_state, headdim
        self.conv_dim = d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * d_state + self.num_heads, bias=False)
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1)
        self.dt_bias = nn.Parameter(init_step_sizes(self.name, self.num_heads, dt_min, dt_max))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.num_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # as in mamba-ssm
        self.norm = nn.RMSNorm(d_inner, eps=1e-5)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if cpu_path_allowed(self.kernel_choice, x.device) and block_available(x, self.in_proj.weight):
            self.kernel = "s6-cpu"  # conv, step sizes, scan, skip, gate and norm in the C kernels
            p = self.headdim
            A = (-self.A_log.exp()).repeat_interleave(p)[:, None]  # (H * P, 1): one decay per channel
            layout = (0, self.d_inner, self.d_inner + self.conv_dim)
            y = scan_block_compiled(
                self.in_proj(x), self.conv, None, None, self.dt_bias, A, self.D.repeat_interleave(p), layout, self.norm
            )
            return self.out_proj(y)
        return super().forward(x)

    def _in_proj(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z, xBC and the step sizes' logits of the in-projection: one split, whose backward is one
        concatenation (three slices would each zero-fill a gradient of the whole projection)."""
        return self.in_proj(x).split([self.d_inner, self.conv_dim, self.num_heads], dim=-1)

    def _split(self, z: Tensor, xBC: Tensor, dt_logits: Tensor) -> Heads:
        """Heads from the gate z, the convolved, activated xBC `(B, L, conv_dim)` and the step sizes' logits."""
        b, length, _ = xBC.shape
        dt = F.softplus(dt_logits + self.dt_bias)  # (B, L, H)
        x, B, C = xBC.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.view(b, length, self.num_heads, self.headdim).transpose(1, 2)  # (B, H, L, P)
        dt = dt.transpose(1, 2)  # (B, H, L)
        A = -self.A_log.exp()
        q = C.unsqueeze(1).expand(b, self.num_heads, length, self.d_state)
        k = dt.unsqueeze(-1) * B.unsqueeze(1)
        log_a = (dt * A[:, None]).unsqueeze(-1)  # scalar decay per head
        return Heads(q, k, x, log_a, ctx=(z, dt, B, C))

    def heads(self, x: Tensor) -> Heads:
        z, xBC, dt_logits = self._in_proj(x)
        xBC = F.silu(causal_conv(self.conv, xBC.transpose(1, 2)).transpose(1, 2))
        return self._split(z, xBC, dt_logits)

    def _recurrence(self, hd: Heads) -> Tensor:
        if use_fast("mamba2/ssd", self.kernel_choice, hd.v.device, _probe):
            self.kernel = "mamba-ssm-ssd"
            _, dt, B, C = hd.ctx
            return _ssd_kernel(hd.v, dt, -self.A_log.exp(), B, C)
        _, dt, B, C = hd.ctx
        if self.kernel_choice != "reference" and compiled_available(hd.v, dt, B, C):
            self.kernel = "s6-cpu"
            return self._compiled_scan(hd.v, dt, B, C)
        self.kernel = "reference"
        return chunked_gla(hd.q, hd.k, hd.v, hd.log_a, self.chunk_size)[0]

    def _compiled_scan(self, x: Tensor, dt: Tensor, B: Tensor, C: Tensor) -> Tensor:
        """SSD as a selective scan (architectures/csrc/selective_scan.c): each of a head's channels
        is an S6 channel with the head's step size and one decay, A_h, shared by its states."""
        b, h, length, p = x.shape
        u = x.permute(0, 2, 1, 3).reshape(b, length, h * p)
        dt_channels = dt.transpose(1, 2).repeat_interleave(p, dim=-1)  # (B, L, H * P)
        A = (-self.A_log.exp()).repeat_interleave(p)[:, None]  # (H * P, 1): one decay per channel
        y = selective_scan_compiled(u, dt_channels, A, B, C)  # (B, L, H * P)
        return y.view(b, length, h, p).permute(0, 2, 1, 3)

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        z = hd.ctx[0]
        b, h, length, p = o.shape
        y = (o + self.D[:, None, None] * hd.v).transpose(1, 2).reshape(b, length, h * p)
        return self.out_proj(self.norm(y * F.silu(z)))

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        state = super().init_state(batch_size)
        state["conv"] = self._param().new_zeros(batch_size, self.conv_dim, self.d_conv - 1)
        return state

    def step_heads(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Heads, dict[str, Tensor]]:
        z, xBC, dt_logits = self._in_proj(x_t)
        conv_out, conv_state = conv_step(self.conv, state["conv"], xBC)
        return self._split(z.unsqueeze(1), F.silu(conv_out).unsqueeze(1), dt_logits.unsqueeze(1)), {"conv": conv_state}


def _ssd_kernel(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    ssd = optional_import("mamba_ssm.ops.triton.ssd_combined").mamba_chunk_scan_combined
    y = ssd(x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A, B.unsqueeze(2), C.unsqueeze(2), chunk_size=64)
    return y.transpose(1, 2).to(x.dtype)


def _probe(device: torch.device) -> bool:
    g = torch.Generator().manual_seed(0)
    x, dt = torch.randn(2, 2, 64, 8, generator=g), torch.rand(2, 2, 64, generator=g) * 0.1
    A, B, C = -torch.rand(2, generator=g) - 0.5, torch.randn(2, 64, 4, generator=g), torch.randn(2, 64, 4, generator=g)
    q, k = C.unsqueeze(1).expand(2, 2, 64, 4), dt.unsqueeze(-1) * B.unsqueeze(1)
    ref, _ = chunked_gla(q, k, x, (dt * A[:, None]).unsqueeze(-1))
    out = _ssd_kernel(*(t.to(device) for t in (x, dt, A, B, C)))
    return torch.allclose(out.float().cpu(), ref, atol=1e-2, rtol=1e-2)
