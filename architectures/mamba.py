"""Mamba's S6 block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces").

in_proj -> (x, z); x -> short depthwise causal conv -> SiLU -> u; selective
SSM per channel: h_t = exp(dt_t A) h_t-1 + dt_t B_t u_t, y_t = C_t h_t + D u_t;
y * SiLU(z) -> out_proj. Defaults are the paper's (d_state 16, d_conv 4,
expand 2, dt_rank ceil(d_model / 16), dt in [1e-3, 1e-1], S4D-real A init).

Reference path: the selective scan in plain PyTorch, time-major (architectures.selective_scan).
Fast path on CUDA: mamba-ssm's selective_scan_fn and causal-conv1d when they
import and pass a first-call check. On a CPU in fp32: the block from the in-projection's output to the
out-projection's input in C (architectures/csrc/selective_scan.c, kernel "s6-cpu": conv + SiLU, step
sizes, scan, skip and gate), built on first use; kernel="reference" or MIXERBENCH_KERNELS=reference keeps
the PyTorch path. TSS per channel: d_state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import Mixer, MixerOperator, causal_conv, conv_step, init_step_sizes, require_positive
from architectures.kernels import cpu_path_allowed, optional_import, use_fast
from architectures.operators import Semiseparable
from architectures.scan import linear_scan
from architectures.selective_scan import (
    block_available,
    compiled_available,
    scan_block_compiled,
    selective_scan,
    selective_scan_compiled,
)


class _Projected(NamedTuple):
    u: Tensor  # (B, D, L) SSM input after conv + SiLU
    z: Tensor  # (B, D, L) gate
    dt: Tensor  # (B, D, L) step sizes, > 0
    B: Tensor  # (B, L, N)
    C: Tensor  # (B, L, N)


class Mamba(Mixer):
    name = "mamba"
    short_conv = True  # d_conv taps ahead of the SSM
    zoology_block = "mamba"  # zoology/mixers/mamba.py: Block, no state mixer

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,  # N = 16: Gu & Dao 2023 and mamba-ssm's Mamba default
        d_conv: int = 4,  # mamba-ssm default
        expand: int = 2,  # paper: E = 2
        dt_rank: int | None = None,  # paper: ceil(d_model / 16)
        dt_min: float = 1e-3,  # mamba-ssm dt init range
        dt_max: float = 1e-1,
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        require_positive(self.name, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank)
        self.d_state, self.d_conv, self.dt_rank = d_state, d_conv, dt_rank
        self.d_inner = d_inner = expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        with torch.no_grad():  # dt log-uniform in [dt_min, dt_max] through the bias
            self.dt_proj.bias.copy_(init_step_sizes(self.name, d_inner, dt_min, dt_max))
        # S4D-real initialisation A_n = -(n + 1)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True  # as in mamba-ssm
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    # ------------------------------------------------------------------ parallel form

    def _project(self, x: Tensor) -> _Projected:
        xs, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, D, L) each
        u = F.silu(self._conv(xs))
        dt, B, C = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt)).transpose(1, 2)  # (B, D, L)
        return _Projected(u, z, dt, B, C)

    def _conv(self, xs: Tensor) -> Tensor:
        if self._fast("causal_conv1d", xs.device):
            conv1d = optional_import("causal_conv1d").causal_conv1d_fn
            # contiguous (B, D, L): its channel-last layout would need D % 8 == 0
            return conv1d(xs.contiguous(), self.conv.weight.squeeze(1), self.conv.bias, activation=None)
        return causal_conv(self.conv, xs)

    def _A(self) -> Tensor:
        return -self.A_log.float().exp()  # (D, N), negative: a stable decay

    def _scan(self, p: _Projected) -> Tensor:
        """The SSM part of y (without the D skip), `(B, D, L)`."""
        if self._fast("selective_scan", p.u.device):
            self.kernel = "mamba-ssm"
            scan = optional_import("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
            # the kernel takes delta in u's dtype; autocast computes softplus in fp32 (mamba-ssm's own
            # block instead passes dt before softplus, with delta_softplus=True)
            return scan(p.u, p.dt.to(p.u.dtype), self._A(), p.B.transpose(1, 2), p.C.transpose(1, 2), None)
        if self.kernel_choice != "reference" and compiled_available(p.u, p.dt, p.B, p.C):
            self.kernel = "s6-cpu"
            y = selective_scan_compiled(p.u.transpose(1, 2), p.dt.transpose(1, 2), self._A(), p.B, p.C)
            return y.transpose(1, 2)
        self.kernel = "reference"
        return self._reference_scan(p)

    def _reference_scan(self, p: _Projected) -> Tensor:
        # time-major (L, B, .): the recurrence's steps are contiguous slices (architectures.selective_scan)
        y = selective_scan(
            p.u.permute(2, 0, 1), p.dt.permute(2, 0, 1), self._A(), p.B.transpose(0, 1), p.C.transpose(0, 1)
        )  # (L, B, D), in fp32 at least (A is fp32), as the kernel computes
        return y.permute(1, 2, 0).to(p.u.dtype)

    def _finish(self, y: Tensor, p: _Projected) -> Tensor:
        y = (y + self.D[:, None] * p.u) * F.silu(p.z)
        return self.out_proj(y.transpose(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        if cpu_path_allowed(self.kernel_choice, x.device) and block_available(x, self.in_proj.weight):
            self.kernel = "s6-cpu"  # conv, step sizes, scan, skip and gate in the C kernels
            y = scan_block_compiled(
                self.in_proj(x), self.conv, self.x_proj.weight, self.dt_proj.weight, self.dt_proj.bias, self._A(), self.D,
                (self.d_inner, 0, None),
            )  # fmt: skip
            return self.out_proj(y)
        p = self._project(x)
        return self._finish(self._scan(p), p)

    def operator(self, x: Tensor) -> MixerOperator:
        """Per d_inner channel: Semiseparable(q = C, k = dt B, log_decay = dt A), acting on u."""
        self.check_input(x)
        p = self._project(x)
        n_channels = self.d_inner
        q = p.C.unsqueeze(1).expand(-1, n_channels, -1, -1)
        k = p.dt.unsqueeze(-1) * p.B.unsqueeze(1)
        log_decay = p.dt.unsqueeze(-1) * self._A()[:, None, :]
        return MixerOperator(Semiseparable(q, k, log_decay), p.u, self._scan(p))

    def frozen(self, x: Tensor):
        """SSM inputs u in, scan outputs out, with the step sizes, B and C of `x` (its forward's scan)."""
        p = self._project(x)
        return lambda inputs: self._scan(p._replace(u=inputs))

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        return self._finish(outputs, self._project(x))

    def state_size(self, seq_len: int) -> int:
        return self.d_state

    # ------------------------------------------------------------------ recurrent form

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        return {
            "conv": p.new_zeros(batch_size, self.d_inner, self.d_conv - 1),  # last d_conv - 1 conv inputs
            "ssm": p.new_zeros(batch_size, self.d_inner, self.d_state),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, D)
        conv_out, conv_state = conv_step(self.conv, state["conv"], xs)
        u = F.silu(conv_out)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (B, D)
        h = torch.exp(dt.unsqueeze(-1) * self._A()) * state["ssm"] + (dt * u).unsqueeze(-1) * B.unsqueeze(1)
        y = ((h * C.unsqueeze(1)).sum(-1).to(u.dtype) + self.D * u) * F.silu(z)
        return self.out_proj(y), {"conv": conv_state, "ssm": h.to(state["ssm"].dtype)}

    # ------------------------------------------------------------------ kernels

    def _fast(self, kernel_name: str, device: torch.device) -> bool:
        return use_fast(f"mamba/{kernel_name}", self.kernel_choice, device, self._probe(kernel_name))

    def _probe(self, kernel_name: str):
        def probe(device: torch.device) -> bool:
            g = torch.Generator(device="cpu").manual_seed(0)
            if kernel_name == "causal_conv1d":
                fn = optional_import("causal_conv1d").causal_conv1d_fn
                xs = torch.randn(2, 8, 32, generator=g).to(device)
                w, b = torch.randn(8, 4, generator=g).to(device), torch.randn(8, generator=g).to(device)
                ref = F.conv1d(xs, w.unsqueeze(1), b, padding=3, groups=8)[..., :32]
                return torch.allclose(fn(xs, w, b, activation=None), ref, atol=1e-4)
            fn = optional_import("mamba_ssm.ops.selective_scan_interface").selective_scan_fn
            u, dt = torch.randn(2, 8, 32, generator=g), torch.rand(2, 8, 32, generator=g) * 0.1
            A = -torch.rand(8, 4, generator=g) - 0.5
            B, C = torch.randn(2, 32, 4, generator=g), torch.randn(2, 32, 4, generator=g)
            ref = (
                linear_scan(torch.exp(dt.unsqueeze(-1) * A[:, None]), (dt * u).unsqueeze(-1) * B.unsqueeze(1)) * C.unsqueeze(1)
            ).sum(-1)
            out = fn(*(t.to(device) for t in (u, dt, A, B.transpose(1, 2), C.transpose(1, 2))), None)
            return torch.allclose(out.cpu(), ref, atol=1e-3)

        return probe
