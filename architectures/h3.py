"""H3, "Hungry Hungry Hippos" (Fu et al. 2023, arXiv 2212.14052), as Zoology's `zoology/mixers/h3/h3.py`
with `add_h3`'s settings (d_state = d_model / 4 = 16 at d_model 64, head_dim 2; no BaseConv ahead of it).

q, k, v = Linear(x) (with bias). K goes through the shift SSM: a state of d_state past inputs read out by
C, i.e. a causal depthwise convolution of d_state taps, plus a skip: k~ = conv(k) + D_k * k. Per head h
(H = d_model / head_dim) and pair (i, j) of its key and value channels, kv_ij = k~_i * v_j goes through the
head's diagonal SSM (S4D-Lin: A_n = -1/2 + i pi n for d_state / 2 complex modes, B = 1, C ~ N(0, 1)
complex, log dt ~ U[log 1e-3, log 1e-1], bilinear discretization), whose kernel
K_h[l] = 2 Re(sum_n C_n dB_n dA_n^l), plus a skip D_h; the query reads it out:
y_j = sum_i q_i (K_h * kv_ij + D_h kv_ij). Then the output projection. The long convolution runs by FFT,
or directly for short sequences on a CPU (architectures.hyena.causal_long_conv; in fp32 the whole mixing
in C, `_CompiledH3Mix`).

Output channel (h, j) sits at h * head_dim + j (Zoology orders it j * H + h before its output
projection: the same map with the projection's columns permuted).

Per value channel (h, j) the operator on v is T[t, s] = (sum_i q_i(t) k~_i(s)) (K_h[t - s] + D_h [t = s]),
the same for every value channel of a head: a gated convolution (an input-independent long filter between
input-dependent gates q and k~). TSS per channel: head_dim * d_state (head_dim key channels, each with
d_state / 2 complex = d_state real modes); the decoding cache holds those and the shift state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures import cpu_kernels
from architectures.base import (
    Mixer,
    MixerOperator,
    causal_conv,
    config_error,
    conv_step,
    depthwise_causal_conv,
    require_positive,
)
from architectures.hyena import causal_long_conv, long_conv_path


class _CompiledH3Mix(torch.autograd.Function):
    """`H3._mix` by one C call each way (architectures/csrc/causal_conv.c), channels-last: q, k~, v `(B, L, D)`,
    each channel's head filter `(D, L)` and skip `(D)`; the long convolutions direct. fp32 on a CPU."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, filt: Tensor, skip: Tensor, head_dim: int) -> Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        batch, length, d = q.shape
        f_t = filt.t().contiguous()  # (L, D): channels inner
        out, z = torch.empty_like(q), q.new_empty(batch, head_dim, length, d)
        cpu_kernels.call("causal_conv", "h3_forward", q, k, v, f_t, skip, out, z, batch, length, d, head_dim, who="h3")
        ctx.save_for_backward(q, k, v, f_t, skip, z)
        return out

    @staticmethod
    def backward(ctx, gout: Tensor):
        q, k, v, f_t, skip, z = ctx.saved_tensors
        batch, length, d = q.shape
        gq, gk, gv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        gf, gskip = torch.zeros_like(f_t), torch.zeros_like(skip)
        tensors = (q, k, v, f_t, skip, z, gout.contiguous(), gq, gk, gv, gf, gskip)
        cpu_kernels.call("causal_conv", "h3_backward", *tensors, batch, length, d, z.shape[1], who="h3")
        return gq, gk, gv, gf.t(), gskip, None


class H3(Mixer):
    name = "h3"
    short_conv = True  # the shift SSM on K is a d_state-tap causal convolution (Zoology trains H3 without BaseConv)
    gated_convolution = True  # the diagonal SSM's kernel is input-independent; q and k~ are the gates

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,  # Zoology's add_h3: d_model / 4 at d_model 64
        head_dim: int = 2,  # Zoology's add_h3
        dt_min: float = 1e-3,  # S4D's dt range (SSKernel defaults)
        dt_max: float = 1e-1,
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        require_positive(self.name, d_state=d_state, head_dim=head_dim)
        if d_state % 2:
            raise config_error(self.name, "d_state", f"must be even (d_state / 2 complex modes), got {d_state}")
        if d_model % head_dim:
            raise config_error(self.name, "head_dim", f"d_model={d_model} is not divisible by head_dim={head_dim}")
        if not 0 < dt_min <= dt_max:
            raise config_error(self.name, "dt_min", f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_state, self.head_dim, self.num_heads = d_state, head_dim, d_model // head_dim
        H, modes = self.num_heads, d_state // 2
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        # shift SSM: B = e_1, C ~ U(-1/sqrt(N), 1/sqrt(N)) (Conv1d's init, as Zoology's SSKernel 'shift' mode)
        self.shift = nn.Conv1d(d_model, d_model, d_state, groups=d_model, padding=d_state - 1, bias=False)
        self.shift_D = nn.Parameter(torch.randn(d_model))
        # diagonal SSM (S4D-Lin), complex parameters stored as (..., 2) real views
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.inv_A_real = nn.Parameter(torch.full((H, modes), math.log(0.5)))  # A_real = -exp(.) = -1/2
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).expand(H, modes).clone())
        self.B = nn.Parameter(torch.view_as_real(torch.ones(H, modes, dtype=torch.cfloat)).clone())
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, modes, dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(H))
        self.out_proj = nn.Linear(d_model, d_model)

    def _discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """dA, dB * C (the kernel's weights) and C, complex `(H, N/2)`, bilinear, in >= fp32."""
        real = torch.promote_types(self.log_dt.dtype, torch.float32)
        dt = self.log_dt.to(real).exp()[:, None]
        A = torch.complex(-self.inv_A_real.to(real).exp(), self.A_imag.to(real))
        B, C = torch.view_as_complex(self.B.to(real).contiguous()), torch.view_as_complex(self.C.to(real).contiguous())
        dtA = dt * A
        dA = (1 + dtA / 2) / (1 - dtA / 2)
        dB = B * dt / (1 - dtA / 2)
        return dA, dB, C

    def ssm_kernel(self, length: int) -> Tensor:
        """K_h[l] = 2 Re(sum_n C_n dB_n dA_n^l): `(H, L)` in >= fp32."""
        dA, dB, C = self._discrete()
        # dA^l = |dA|^l (cos + i sin)(l arg dA) in real ops: torch's complex exp and its backward cost several times more
        log_dA, lags = dA.log(), torch.arange(length, device=dA.device)
        magnitude, angle = torch.exp(log_dA.real.unsqueeze(-1) * lags), log_dA.imag.unsqueeze(-1) * lags  # (H, N/2, L)
        w = (C * dB).unsqueeze(-1)
        return 2 * (magnitude * (w.real * torch.cos(angle) - w.imag * torch.sin(angle))).sum(-2)

    def _gates(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k~, v `(B, d_model, L)`."""
        q, k, v = (p(x).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        k = causal_conv(self.shift, k) + self.shift_D[:, None] * k
        return q, k, v

    def _mix(self, q: Tensor, k: Tensor, v: Tensor, kernel: Tensor) -> Tensor:
        """y_j = sum_i q_i (K * (k~_i v_j) + D k~_i v_j) per head, `(B, d_model, L)`. The sum over the
        head's key channels i (head_dim of them, 2 in Zoology's H3) runs as a loop: each term is a
        long convolution of (B, d_model, L), where one 5-dimensional broadcast over (i, j) made its
        backward reduce over both."""
        b, _, length = v.shape
        H, d = self.num_heads, self.head_dim
        filt = kernel.repeat_interleave(d, dim=0)  # (H * d, L): the head's filter for each value channel j
        qh, kh, vh = (t.view(b, H, d, length) for t in (q, k, v))
        out = 0
        for i in range(d):
            kv = kh[:, :, i : i + 1] * vh  # (B, H, j, L)
            y = causal_long_conv(kv.reshape(b, H * d, length), filt).view(b, H, d, length)
            out = out + qh[:, :, i : i + 1] * (y + self.D.view(1, H, 1, 1) * kv)
        return out.reshape(b, H * d, length)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        self.kernel = long_conv_path(x.transpose(1, 2))
        if self.kernel == "direct" and self.kernel_choice != "reference" and self._compiled(x):
            # one projection for q, k, v: a (B L, 3D) product costs less than three of (B L, D)
            projections = (self.q_proj, self.k_proj, self.v_proj)
            weight, bias = torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
            q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)  # (B, L, D) each
            # the skip D_k k is the shift's lag-0 tap: one convolution with it added to that tap
            w = self.shift.weight
            taps = torch.cat([w[..., :-1], w[..., -1:] + self.shift_D[:, None, None]], dim=-1)
            k = depthwise_causal_conv(k.transpose(1, 2), taps).transpose(1, 2)
            d = self.head_dim
            filt = self.ssm_kernel(x.shape[1]).to(x.dtype).repeat_interleave(d, dim=0)
            return self.out_proj(_CompiledH3Mix.apply(q, k, v, filt, self.D.repeat_interleave(d), d))
        y = self._mix(*self._gates(x), self.ssm_kernel(x.shape[1]))
        return self.out_proj(y.transpose(1, 2))

    def _compiled(self, x: Tensor) -> bool:
        """Whether `_mix` runs in the C kernel (`_CompiledH3Mix`): fp32 and the kernel built."""
        fp32 = all(t.dtype == torch.float32 for t in (x, self.q_proj.weight, self.D))
        return fp32 and cpu_kernels.load("causal_conv") is not None

    def frozen(self, x: Tensor):
        """Values v in, y out, with the gates q, k~ of `x` (its forward's FFT path)."""
        q, k, _ = self._gates(x)
        kernel = self.ssm_kernel(x.shape[1])
        return lambda inputs: self._mix(q, k, inputs, kernel)

    def operator(self, x: Tensor) -> MixerOperator:
        self.check_input(x)
        q, k, v = self._gates(x)
        b, _, length = v.shape
        H, d = self.num_heads, self.head_dim
        kernel = self.ssm_kernel(length).to(x.dtype)
        t = torch.arange(length, device=x.device)
        lag = t[:, None] - t[None, :]
        toeplitz = kernel[:, lag.clamp_min(0)] * (lag >= 0)  # (H, L, L)
        toeplitz = toeplitz + self.D[:, None, None] * torch.eye(length, dtype=x.dtype, device=x.device)
        gates = torch.einsum("bhit,bhis->bhts", q.view(b, H, d, length), k.view(b, H, d, length))
        T = gates * toeplitz  # (B, H, L, L): one per head
        matrix = T.unsqueeze(2).expand(b, H, d, length, length).reshape(b, H * d, length, length)
        return MixerOperator(matrix, v, self._mix(q, k, v, self.ssm_kernel(length)))

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        return self.out_proj(outputs.transpose(1, 2))

    def state_size(self, seq_len: int) -> int:
        return self.head_dim * self.d_state

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        real = torch.promote_types(p.dtype, torch.float32)
        H, d = self.num_heads, self.head_dim
        return {
            "shift": p.new_zeros(batch_size, self.d_model, self.d_state - 1),  # past inputs of the shift SSM
            # the diagonal SSM's complex state per (head, key i, value j, mode), as a real view
            "ssm": torch.zeros(batch_size, H, d, d, self.d_state // 2, 2, dtype=real, device=p.device),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        b = x_t.shape[0]
        H, d = self.num_heads, self.head_dim
        q, k, v = self.q_proj(x_t), self.k_proj(x_t), self.v_proj(x_t)
        shifted, shift_state = conv_step(self.shift, state["shift"], k)
        k = shifted + self.shift_D * k
        kv = k.view(b, H, d, 1) * v.view(b, H, 1, d)  # (B, H, i, j)
        dA, dB, C = self._discrete()
        drive = dB[None, :, None, None] * kv.unsqueeze(-1).to(dB.real.dtype)
        s = torch.view_as_complex(state["ssm"]) * dA[None, :, None, None] + drive
        y = 2 * (C[None, :, None, None] * s).sum(-1).real.to(x_t.dtype) + self.D.view(1, H, 1, 1) * kv
        out = (q.view(b, H, d, 1) * y).sum(2).reshape(b, H * d)
        return self.out_proj(out), {"shift": shift_state, "ssm": torch.view_as_real(s).contiguous()}
