"""DeltaNet (Schlag et al. 2021, "Linear Transformers Are Secretly Fast Weight Programmers"; Yang et al.
2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length", arXiv 2406.06484).

As flash-linear-attention's layer (`fla/layers/delta_net.py`) with Zoology's settings
(`zoology/experiments/models_repo.py: add_delta_net`: 2 heads, beta on, no output gate, short conv 4):
q, k, v = Linear(x) (no bias) -> a causal depthwise convolution of 4 taps each (no bias) -> SiLU;
q, k L2-normalized per head, q scaled by d_k^-1/2 (fla's kernel default); beta_t = sigmoid(W_b x_t) per head;

    S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,   o_t = S_t q_t

per-head RMSNorm of o (eps 1e-5), output projection (no bias). expand_k = expand_v = 1 (fla's defaults).
PyTorch's default initialisation for every projection and convolution, as fla's layer leaves them.

Per value channel the operator on v is T = tril(Q K^T) (I + tril(diag(beta) K K^T, -1))^{-1} diag(beta),
the same for every value channel of a head (`architectures.delta_rule.delta_rule_matrix`). TSS per channel:
the key head dim. Reference path: the chunked WY form (`architectures.delta_rule.chunked_delta_rule`).
On a CPU (fp32, fp64) the C kernel `architectures.delta_rule.compiled_delta_rule` runs instead (kernel
"delta-rule-cpu"), with the q/k normalization and the readout's norm (and gate) in C as well
(`l2_normalize`, `rms_norm_gate`); no GPU kernel is wired (fla's `chunk_delta_rule` would be the one).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import Mixer, MixerOperator, causal_conv, config_error, conv_step, require_divisible, require_positive
from architectures.delta_rule import (
    chunked_delta_rule,
    compiled_available,
    compiled_delta_rule,
    delta_rule_matrix,
    delta_rule_step,
    l2_normalize,
    rms_norm_gate,
)


class DeltaHeads(NamedTuple):
    q: Tensor  # (B, H, L, K), normalized and scaled
    k: Tensor  # (B, H, L, K), normalized
    v: Tensor  # (B, H, L, V): the channel inputs of the operator
    beta: Tensor  # (B, H, L)
    log_alpha: Tensor | None  # (B, H, L) <= 0, or None (no decay)
    x: Tensor  # the mixer's input (B, L, D), for the output gate


class DeltaRuleMixer(Mixer):
    """Shared body of DeltaNet and Gated DeltaNet: projections, short convolution, delta rule, readout.
    Subclasses set the sizes and provide `_decay(x)` (log alpha or None) and `finish(o, heads)`."""

    short_conv = True  # conv_size taps on q, k, v (fla's ShortConvolution)
    zoology_hybrid = True  # models_repo.py: Hybrid([BaseConv, DeltaNet]) with use_short_conv=True
    chunk_size = 16  # the reference path's chunk (GPUs, bf16, kernel="reference"; a CPU trains in the C kernel)
    num_heads: int
    key_dim: int  # per head
    value_dim: int  # per head

    def _build(self, d_model: int, conv_size: int, conv_bias: bool) -> None:
        keys, values = self.num_heads * self.key_dim, self.num_heads * self.value_dim
        self.conv_size = conv_size
        # q, k, v projections as one Linear (rows: q, then k, then v); PyTorch's init draws each row from
        # U(-1/sqrt(d_model), 1/sqrt(d_model)) either way, so this is fla's three projections in one matmul
        self.qkv_proj = nn.Linear(d_model, 2 * keys + values, bias=False)
        self.b_proj = nn.Linear(d_model, self.num_heads, bias=False)
        channels = 2 * keys + values  # q, k, v side by side: three depthwise convolutions in one module
        self.conv = nn.Conv1d(channels, channels, conv_size, groups=channels, padding=conv_size - 1, bias=conv_bias)
        self.o_proj = nn.Linear(values, d_model, bias=False)

    def _qkv(self, x: Tensor) -> Tensor:
        return self.qkv_proj(x)

    def _decay(self, x: Tensor) -> Tensor | None:
        return None

    def _split(self, qkv: Tensor, x: Tensor) -> DeltaHeads:
        """Heads from the convolved, activated q, k, v `(B, L, 2 H K + H V)` and the input x."""
        b, length, _ = qkv.shape
        keys = self.num_heads * self.key_dim
        # q and k normalized in one call: (B, L, 2H, K), the heads time-major as the kernel takes them
        qk = qkv[..., : 2 * keys].view(b, length, 2 * self.num_heads, self.key_dim)
        compiled = self.kernel_choice != "reference"
        qk = l2_normalize(qk, 1e-6, scaled=self.num_heads, scale=self.key_dim**-0.5, compiled=compiled)
        q, k = qk[:, :, : self.num_heads].transpose(1, 2), qk[:, :, self.num_heads :].transpose(1, 2)
        v = qkv[..., 2 * keys :].view(b, length, self.num_heads, self.value_dim).transpose(1, 2)
        beta = torch.sigmoid(self.b_proj(x)).transpose(1, 2)
        log_alpha = self._decay(x)
        return DeltaHeads(q, k, v, beta, None if log_alpha is None else log_alpha.transpose(1, 2), x)

    def heads(self, x: Tensor) -> DeltaHeads:
        qkv = F.silu(causal_conv(self.conv, self._qkv(x).transpose(1, 2)).transpose(1, 2))
        return self._split(qkv, x)

    def _recurrence(self, hd: DeltaHeads, compiled: bool = True) -> Tensor:
        gate = () if hd.log_alpha is None else (hd.log_alpha,)
        if compiled and self.kernel_choice != "reference" and compiled_available(hd.q, hd.k, hd.v, hd.beta, *gate):
            self.kernel = "delta-rule-cpu"
            return compiled_delta_rule(hd.q, hd.k, hd.v, hd.beta, hd.log_alpha)[0]
        self.kernel = "reference"
        return chunked_delta_rule(hd.q, hd.k, hd.v, hd.beta, hd.log_alpha, self.chunk_size)[0]

    def finish(self, o: Tensor, hd: DeltaHeads) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        hd = self.heads(x)
        return self.finish(self._recurrence(hd), hd)

    def _to_channels(self, t: Tensor) -> Tensor:
        """(B, H, L, V) -> (B, H * V, L)."""
        b, h, length, vdim = t.shape
        return t.permute(0, 1, 3, 2).reshape(b, h * vdim, length)

    def operator(self, x: Tensor) -> MixerOperator:
        self.check_input(x)
        hd = self.heads(x)
        T = delta_rule_matrix(hd.q, hd.k, hd.beta, hd.log_alpha).to(hd.v.dtype)  # (B, H, L, L): one per head
        b, h, length, _ = T.shape
        matrix = T.unsqueeze(2).expand(b, h, self.value_dim, length, length).reshape(b, h * self.value_dim, length, length)
        return MixerOperator(matrix, self._to_channels(hd.v), self._to_channels(self._recurrence(hd)))

    def frozen(self, x: Tensor):
        """Values in, delta-rule outputs out, with the q, k, beta (and alpha) of `x` (the chunked path, which
        functorch's transforms, e.g. a vectorized Jacobian, can batch; the C kernel's cannot)."""
        hd = self.heads(x)

        def mix(inputs: Tensor) -> Tensor:  # (N, H*V, L) -> (N, H*V, L)
            n, _, length = inputs.shape
            v = inputs.reshape(n, self.num_heads, self.value_dim, length).transpose(-1, -2)
            return self._to_channels(self._recurrence(hd._replace(v=v), compiled=False))

        return mix

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        b, _, length = outputs.shape
        o = outputs.reshape(b, self.num_heads, self.value_dim, length).transpose(-1, -2)
        return self.finish(o, self.heads(x))

    def state_size(self, seq_len: int) -> int:
        return self.key_dim

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        return {
            "S": p.new_zeros(batch_size, self.num_heads, self.key_dim, self.value_dim),
            "conv": p.new_zeros(batch_size, self.conv.in_channels, self.conv_size - 1),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        conv_out, conv_state = conv_step(self.conv, state["conv"], self._qkv(x_t))
        hd = self._split(F.silu(conv_out).unsqueeze(1), x_t.unsqueeze(1))
        log_alpha = None if hd.log_alpha is None else hd.log_alpha[:, :, 0]
        o, S = delta_rule_step(state["S"], hd.q[:, :, 0], hd.k[:, :, 0], hd.v[:, :, 0], hd.beta[:, :, 0], log_alpha)
        return self.finish(o.unsqueeze(2).to(x_t.dtype), hd)[:, 0], {"S": S, "conv": conv_state}


class DeltaNet(DeltaRuleMixer):
    name = "deltanet"

    def __init__(
        self,
        d_model: int,
        num_heads: int = 2,  # Zoology's add_delta_net
        expand_k: float = 1.0,  # fla's DeltaNet defaults
        expand_v: float = 1.0,
        conv_size: int = 4,  # fla and Zoology: short convolution of 4 taps
        conv_bias: bool = False,  # fla's default
        norm_eps: float = 1e-5,
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads, conv_size=conv_size)
        keys, values = int(d_model * expand_k), int(d_model * expand_v)
        if keys < num_heads or values < num_heads:
            raise config_error(self.name, "expand_k", f"key dim {keys} / value dim {values} smaller than num_heads={num_heads}")
        require_divisible(self.name, "d_model * expand_k", keys, "num_heads", num_heads)
        require_divisible(self.name, "d_model * expand_v", values, "num_heads", num_heads)
        self.num_heads, self.key_dim, self.value_dim = num_heads, keys // num_heads, values // num_heads
        self._build(d_model, conv_size, conv_bias)
        self.norm = nn.RMSNorm(self.value_dim, eps=norm_eps)

    def finish(self, o: Tensor, hd: DeltaHeads) -> Tensor:
        b, h, length, v = o.shape
        y = rms_norm_gate(o.transpose(1, 2), self.norm, compiled=self.kernel_choice != "reference")  # kernel's o: (B, L, H, V)
        return self.o_proj(y.reshape(b, length, h * v))
