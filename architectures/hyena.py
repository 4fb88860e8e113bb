"""The Hyena operator (Poli et al. 2023, "Hyena Hierarchy"), order 2, as in HazyResearch/safari.

in_proj -> (x0, x1, v) -> short depthwise causal conv (3 taps) each; v <- x1 * v;
v <- h * v + bias * v with a long causal filter h of the sequence's length, computed by FFT (by its
taps directly up to DIRECT_MAX_LEN on a CPU, where that is faster: in fp32 the whole operator after the
in-projection in C, `_CompiledHyena`);
y = x0 * v -> out_proj. The filter is implicit: an MLP with sine activations (order 64) of a
positional encoding (emb_dim 3), times an exponential decay window (fast 0.3, slow 1.5,
target 1e-2) — safari's defaults. The positional encoding spans [0, max_len) (safari's l_max), so the
harness builds it with max_len = the task's sequence length, as safari does; a max_len far above the
sequence length leaves the filter nearly constant over the positions used.

Per channel the operator on v is diag(x0) (H + diag(bias)) diag(x1), H the Toeplitz matrix of h.
TSS per channel: the filter length, i.e. the sequence length; the decoding cache holds every
past input of the long convolution (plus the short-conv state).
"""

from __future__ import annotations

import math

import torch
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


class Sin(nn.Module):
    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """h(t) = MLP(pos(t)) * exp(-|delta| t): one filter per channel, defined on [0, max_len)."""

    def __init__(self, channels: int, max_len: int, order: int = 64, emb_dim: int = 3, train_positions: bool = False):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise config_error("hyena", "emb_dim", f"must be odd and >= 3, got {emb_dim}")
        self.max_len, self.emb_dim = max_len, emb_dim
        # Zoology's filter trains its positional encoding (a parameter, initialised to the fixed one)
        self.z = nn.Parameter(self._encoding(max_len, None)[0]) if train_positions else None
        self.mlp = nn.Sequential(
            nn.Linear(emb_dim, order),
            Sin(order),
            nn.Linear(order, order),
            Sin(order),
            nn.Linear(order, order),
            Sin(order),
            nn.Linear(order, channels, bias=False),
        )
        target, fast, slow = 1e-2, 0.3, 1.5
        self.register_buffer(
            "deltas", torch.linspace(math.log(target) / fast, math.log(target) / slow, channels), persistent=False
        )

    def positions(self, length: int, device) -> tuple[Tensor, Tensor]:
        z, t = self._encoding(length, device)
        return (z if self.z is None else self.z[:length]), t

    def _encoding(self, length: int, device) -> tuple[Tensor, Tensor]:
        t = torch.linspace(0, 1, self.max_len, device=device)[:length, None]
        bands = (self.emb_dim - 1) // 2
        w = 2 * math.pi * torch.arange(length, device=device)[:, None] / self.max_len
        f = torch.linspace(1e-4, bands - 1, bands, device=device)[None]
        return torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1), t

    def forward(self, length: int, device) -> Tensor:
        z, t = self.positions(length, device)
        z, t = z.to(self.deltas.dtype), t.to(self.deltas.dtype)
        return (self.mlp(z) * torch.exp(-t * self.deltas.abs())).transpose(0, 1)  # (channels, L)


# up to this length the long convolution is computed directly, as a depthwise convolution with L taps:
# at the CPU presets' L 64 an FFT of length 2L costs several times more
DIRECT_MAX_LEN = 128


def toeplitz(h: Tensor) -> Tensor:
    """`(C, L, L)` causal Toeplitz matrices T[c, t, s] = h[c, t - s] (s <= t) of filters h `(C, L)`."""
    length = h.shape[-1]
    t = torch.arange(length, device=h.device)
    lag = t[:, None] - t[None, :]
    return h[:, lag.clamp_min(0)] * (lag >= 0)


def long_conv_path(u: Tensor) -> str:
    """How `causal_long_conv` computes on `u`: "direct" (short sequences on a CPU) or "fft"."""
    direct = u.shape[-1] <= DIRECT_MAX_LEN and u.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
    return "direct" if direct else "fft"


def causal_long_conv(u: Tensor, h: Tensor) -> Tensor:
    """sum_{s <= t} h[t - s] u[s] for u `(B, C, L)`, h `(C, L)`: directly for short sequences on a CPU,
    by FFT (O(L log L)) beyond DIRECT_MAX_LEN and on GPUs; the two agree (tests/test_mixers.py)."""
    if long_conv_path(u) == "fft":
        return fft_causal_conv(u, h)
    return depthwise_causal_conv(u, h.to(u.dtype).flip(-1).unsqueeze(1))


def fft_causal_conv(u: Tensor, h: Tensor) -> Tensor:
    """sum_{s <= t} h[t - s] u[s] for u `(B, C, L)`, h `(C, L)`, in O(L log L)."""
    length = u.shape[-1]
    n = 2 * length
    work = torch.promote_types(torch.promote_types(u.dtype, h.dtype), torch.float32)  # FFTs in >= fp32 (bf16 under autocast)
    out = torch.fft.irfft(torch.fft.rfft(u.to(work), n=n) * torch.fft.rfft(h.to(work), n=n), n=n)[..., :length]
    return out.to(u.dtype)


class _CompiledHyena(torch.autograd.Function):
    """Hyena's operator from its in-projection's output `proj` (B, L, 3D) to x0 * (h * (x1 v) + bias x1 v)
    (B, L, D), channels-last, by one C call each way (architectures/csrc/causal_conv.c): short conv, gates
    and the direct long convolution, with no copy or transpose between them. fp32 on a CPU."""

    @staticmethod
    def forward(ctx, proj: Tensor, conv_w: Tensor, conv_b: Tensor, h: Tensor, skip: Tensor) -> Tensor:
        batch, length, width = proj.shape
        taps = conv_w.shape[-1]
        w, h_t = conv_w.reshape(width, taps).t().contiguous(), h.t().contiguous()  # (K, 3D), (L, D): channels inner
        y, z = (proj.new_empty(batch, length, width // 3) for _ in range(2))
        xs = torch.empty_like(proj)
        tensors = (proj, w, conv_b, h_t, skip, y, xs, z)
        cpu_kernels.call("causal_conv", "hyena_forward", *tensors, batch, length, width // 3, taps, who="hyena")
        ctx.save_for_backward(proj, w, h_t, skip, xs, z)
        ctx.conv_shape = conv_w.shape
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        proj, w, h_t, skip, xs, z = ctx.saved_tensors
        batch, length, width = proj.shape
        g_proj, g_w, g_b = torch.empty_like(proj), torch.zeros_like(w), proj.new_zeros(width)
        g_h, g_skip = torch.zeros_like(h_t), torch.zeros_like(skip)
        tensors = (proj, w, h_t, skip, xs, z, gy.contiguous(), g_proj, g_w, g_b, g_h, g_skip)
        cpu_kernels.call("causal_conv", "hyena_backward", *tensors, batch, length, width // 3, w.shape[0], who="hyena")
        return g_proj, g_w.t().reshape(ctx.conv_shape), g_b, g_h.t(), g_skip


class Hyena(Mixer):
    name = "hyena"
    short_conv = True  # short_filter_order taps on q, k, v (Zoology trains Hyena without a BaseConv)
    gated_convolution = True  # the long filter h is input-independent; only the gates x0, x1 read the input
    # the implicit filter is defined on [0, max_len) (safari's l_max): the harness sets it to the
    # task's sequence length, as safari does, so the filter spans the positions actually used
    length_param = "max_len"

    def __init__(
        self, d_model: int, max_len: int = 4096, filter_order: int = 64, short_filter_order: int = 3, kernel: str = "auto",
        train_positions: bool = False,
    ):
        # filter_order 64 and short_filter_order 3: safari's HyenaOperator defaults (Poli et al. 2023)
        super().__init__(d_model, kernel)
        require_positive(self.name, max_len=max_len, filter_order=filter_order, short_filter_order=short_filter_order)
        self.max_len, self.short = max_len, short_filter_order
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_filter = nn.Conv1d(
            3 * d_model, 3 * d_model, short_filter_order, groups=3 * d_model, padding=short_filter_order - 1
        )
        self.filter = ImplicitFilter(d_model, max_len, order=filter_order, train_positions=train_positions)
        self.bias = nn.Parameter(torch.randn(d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def _check_length(self, length: int) -> None:
        if length > self.max_len:
            raise ValueError(f"hyena: sequence length {length} exceeds `max_len`={self.max_len}; build with a larger max_len")

    def _gates(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self._check_length(x.shape[1])
        uc = causal_conv(self.short_filter, self.in_proj(x).transpose(1, 2))
        return uc.chunk(3, dim=1)  # x0, x1, v: (B, D, L) each

    def _mix(self, x0: Tensor, x1: Tensor, v: Tensor, h: Tensor) -> Tensor:
        """x0 * (h * (x1 v) + bias x1 v), the long convolution by FFT: `(B, D, L)`."""
        u = x1 * v
        return x0 * (causal_long_conv(u, h) + self.bias[:, None] * u)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        self.kernel = long_conv_path(x.transpose(1, 2))
        if self.kernel == "direct" and self.kernel_choice != "reference" and self._compiled(x):
            self._check_length(x.shape[1])
            w = self.short_filter
            y = _CompiledHyena.apply(self.in_proj(x), w.weight, w.bias, self.filter(x.shape[1], x.device), self.bias)
            return self.out_proj(y)
        y = self._mix(*self._gates(x), self.filter(x.shape[1], x.device))
        return self.out_proj(y.transpose(1, 2))

    def _compiled(self, x: Tensor) -> bool:
        """Whether the whole operator runs in the C kernel (`_CompiledHyena`): fp32 and the kernel built."""
        fp32 = all(t.dtype == torch.float32 for t in (x, self.in_proj.weight, self.filter.deltas))
        return fp32 and cpu_kernels.load("causal_conv") is not None

    def frozen(self, x: Tensor):
        """Values v in, x0 * (h * (x1 v) + bias x1 v) out, with the gates x0, x1 of `x` (its forward's FFT)."""
        x0, x1, _ = self._gates(x)
        h = self.filter(x.shape[1], x.device)
        return lambda inputs: self._mix(x0, x1, inputs, h)

    def operator(self, x: Tensor) -> MixerOperator:
        self.check_input(x)
        x0, x1, v = self._gates(x)
        length = x.shape[1]
        h = self.filter(length, x.device)  # (D, L)
        filters = toeplitz(h) + torch.diag_embed(self.bias[:, None].expand(-1, length))
        matrix = x0.unsqueeze(-1) * filters.unsqueeze(0) * x1.unsqueeze(-2)
        return MixerOperator(matrix, v, self._mix(x0, x1, v, h))

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        return self.out_proj(outputs.transpose(1, 2))

    def state_size(self, seq_len: int) -> int:
        return seq_len

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        return {
            "short": p.new_zeros(batch_size, 3 * self.d_model, self.short - 1),
            "history": p.new_zeros(batch_size, self.d_model, 0),  # past inputs of the long convolution
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        conv_out, short = conv_step(self.short_filter, state["short"], self.in_proj(x_t))
        x0, x1, v = conv_out.chunk(3, dim=-1)
        history = torch.cat([state["history"], (x1 * v).unsqueeze(-1)], dim=-1)  # (B, D, t + 1)
        length = history.shape[-1]
        if length > self.max_len:
            raise ValueError(f"hyena: decoding past `max_len`={self.max_len}")
        h = self.filter(length, x_t.device).flip(-1)  # h[t - s] for s = 0..t
        y = x0 * ((history * h).sum(-1) + self.bias * history[..., -1])
        return self.out_proj(y), {"short": short, "history": history}
