"""Multi-head causal softmax attention with rotary positions (Vaswani et al. 2017; RoPE: Su et al. 2021).

Fast path: flash-attn's `flash_attn_func` on CUDA for fp16/bf16 inputs (the only dtypes it
takes; training runs under bf16 autocast) when it imports and matches; otherwise
`torch.nn.functional.scaled_dot_product_attention` (which picks its own CUDA backend). The
reference path materializes softmax(QK^T).
TSS per channel grows with position (the KV cache holds every past token):
`state_size(L) = L`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import Mixer, MixerOperator, config_error, require_divisible, require_positive
from architectures.kernels import optional_import, use_fast

FLASH_DTYPES = (torch.float16, torch.bfloat16)  # flash-attn has no fp32 kernel


def rotary_angles(positions: Tensor, dim: int, dtype: torch.dtype, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin `(L, dim/2)` of the angles pos * base^(-2j/dim)."""
    half = dim // 2
    freqs = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs
    return angles.cos().to(dtype), angles.sin().to(dtype)


@functools.lru_cache(maxsize=32)
def _rotary_table(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # the angles of positions 0..L-1 depend only on the shape: computed once, not every call (and
    # outside inference mode, whose tensors autograd could not save for a later training step)
    with torch.inference_mode(False), torch.no_grad():
        return rotary_angles(torch.arange(length, device=device), dim, dtype)


def rotary(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    """Rotate pairs (x_j, x_{j + d/2}) of x `(..., L, d)` by angle pos * base^(-2j/d); positions
    default to 0..L-1."""
    half = x.shape[-1] // 2
    if positions is None and base == 10000.0:
        cos, sin = _rotary_table(x.shape[-2], x.shape[-1], x.device, x.dtype)
    else:
        positions = torch.arange(x.shape[-2], device=x.device) if positions is None else positions
        cos, sin = rotary_angles(positions, x.shape[-1], x.dtype, base)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def flash_attention(q: Tensor, k: Tensor, v: Tensor, window: int | None = None) -> Tensor:
    """flash-attn on `(B, H, L, Dh)` tensors: causal, and with a window w, key j is visible to query i
    when i - (w - 1) <= j <= i (flash-attn's `window_size=(left, right)` local mask)."""
    flash = optional_import("flash_attn").flash_attn_func
    window_size = (-1, -1) if window is None else (window - 1, 0)
    out = flash(*(t.transpose(1, 2) for t in (q, k, v)), causal=True, window_size=window_size)
    return out.transpose(1, 2)


class Attention(Mixer):
    name = "attention"
    window_size: int | None = None  # every past token is visible; sliding_window sets w

    def __init__(self, d_model: int, num_heads: int = 1, kernel: str = "auto"):
        # num_heads=1: Zoology's MQAR attention baseline (Arora et al. 2023) uses a single head.
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads)
        require_divisible(self.name, "d_model", d_model, "num_heads", num_heads)
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        if self.head_dim % 2:
            raise config_error(
                self.name, "num_heads", f"head dim d_model/num_heads={self.head_dim} must be even for rotary positions"
            )
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return rotary(q), rotary(k), v  # each (B, H, L, Dh)

    def _mask(self, length: int, device: torch.device) -> Tensor:
        """Which keys each query sees: the past (and itself), within the window if there is one."""
        t = torch.arange(length, device=device)
        gap = t[:, None] - t[None, :]
        return (gap >= 0) if self.window_size is None else (gap >= 0) & (gap < self.window_size)

    def _weights(self, q: Tensor, k: Tensor) -> Tensor:
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        return scores.masked_fill(~self._mask(q.shape[-2], q.device), float("-inf")).softmax(-1)

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.window_size is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self._mask(q.shape[-2], q.device))

    def _mix(self, x: Tensor) -> Tensor:
        return self._attend(*self._heads(x))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.kernel_choice == "reference":
            self.kernel = "reference"
            return self._weights(q, k) @ v
        kernel_name = "flash_attn" if self.window_size is None else f"flash_attn/window={self.window_size}"
        if q.dtype in FLASH_DTYPES and use_fast(kernel_name, self.kernel_choice, q.device, self._probe):
            self.kernel = "flash-attn"
            return flash_attention(q, k, v, self.window_size)
        self.kernel = "sdpa"
        return self._sdpa(q, k, v)

    def _probe(self, device: torch.device) -> bool:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 2, 64, 16, generator=g) for _ in range(3))
        out = flash_attention(*(t.to(device, torch.bfloat16) for t in (q, k, v)), self.window_size)
        # bf16 against fp32: loose enough for rounding, far below what a wrong mask or layout gives
        return torch.allclose(out.float().cpu(), self._sdpa(q, k, v), atol=5e-2)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        o = self._mix(x)  # (B, H, L, Dh)
        return self.out_proj(o.transpose(1, 2).reshape(x.shape))

    def operator(self, x: Tensor) -> MixerOperator:
        """Per head the attention matrix; channels are the H * Dh value channels (head-major)."""
        self.check_input(x)
        q, k, v = self._heads(x)
        weights = self._weights(q, k).repeat_interleave(self.head_dim, dim=1)  # (B, H*Dh, L, L)
        inputs = v.transpose(-1, -2).reshape(x.shape[0], self.d_model, x.shape[1])
        outputs = self._mix(x).transpose(-1, -2).reshape(inputs.shape)
        return MixerOperator(weights, inputs, outputs)

    def frozen(self, x: Tensor):
        """Values in, attention outputs out, with the queries and keys of `x` (its forward's kernel)."""
        q, k, _ = self._heads(x)

        def mix(inputs: Tensor) -> Tensor:  # (B, H*Dh, L) -> (B, H*Dh, L)
            b, _, length = inputs.shape
            v = inputs.reshape(b, self.num_heads, self.head_dim, length).transpose(-1, -2)
            return self._attend(q, k, v).transpose(-1, -2).reshape(inputs.shape)

        return mix

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        b, _, length = outputs.shape
        return self.out_proj(outputs.view(b, self.num_heads, self.head_dim, length).permute(0, 3, 1, 2).reshape(b, length, -1))

    def state_size(self, seq_len: int) -> int:
        return seq_len

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        empty = p.new_zeros(batch_size, self.num_heads, 0, self.head_dim)
        return {"k": empty, "v": empty.clone()}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        b = x_t.shape[0]
        q, k, v = self.qkv(x_t).view(b, 3, self.num_heads, 1, self.head_dim).unbind(1)
        pos = torch.tensor([state["k"].shape[2]], device=x_t.device)
        k_cache = torch.cat([state["k"], rotary(k, pos)], dim=2)
        v_cache = torch.cat([state["v"], v], dim=2)
        weights = (rotary(q, pos) @ k_cache.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(-1)
        o = (weights @ v_cache).reshape(b, self.d_model)
        return self.out_proj(o), {"k": k_cache, "v": v_cache}
