"""Sliding-window (local) causal softmax attention: each token attends to itself and the
w - 1 tokens before it (Beltagy et al. 2020, "Longformer"; used as the local mixer of Based,
Arora et al. 2024). Rotary positions, one head (as `attention`); window 16 (Based uses 64-128
at sequence length 2k; scaled to the suite's 64-512).

Fast path: flash-attn's `flash_attn_func(window_size=(w - 1, 0))` (key j visible to query i when
i - (w - 1) <= j <= i, flash-attn's local mask) on CUDA for fp16/bf16 inputs, which are the only
dtypes it takes (training runs under bf16 autocast), when it imports and matches; otherwise SDPA
with a banded mask. TSS per channel: w. The cache holds the last w - 1
keys and values and the position counter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from architectures.attention import Attention, rotary
from architectures.base import require_positive
from architectures.kernels import optional_import, use_fast


def _flash_window(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    flash = optional_import("flash_attn").flash_attn_func
    out = flash(*(t.transpose(1, 2) for t in (q, k, v)), causal=True, window_size=(window - 1, 0))
    return out.transpose(1, 2)


class SlidingWindowAttention(Attention):
    name = "sliding_window"

    def __init__(self, d_model: int, window_size: int = 16, num_heads: int = 1, kernel: str = "auto"):
        require_positive(self.name, window_size=window_size)
        super().__init__(d_model, num_heads=num_heads, kernel=kernel)
        self.window_size = window_size

    def _band(self, length: int, device) -> Tensor:
        t = torch.arange(length, device=device)
        gap = t[:, None] - t[None, :]
        return (gap >= 0) & (gap < self.window_size)

    def _weights(self, q: Tensor, k: Tensor) -> Tensor:
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        return scores.masked_fill(~self._band(q.shape[-2], q.device), float("-inf")).softmax(-1)

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self._heads(x)
        if self.kernel_choice == "reference":
            self.kernel = "reference"
            return self._weights(q, k) @ v
        flash_dtype = q.dtype in (torch.float16, torch.bfloat16)  # flash-attn has no fp32 kernel
        if flash_dtype and use_fast("flash_attn/window", self.kernel_choice, q.device, self._probe):
            self.kernel = "flash-attn"
            return _flash_window(q, k, v, self.window_size)
        self.kernel = "sdpa"
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self._band(x.shape[1], x.device))

    def _probe(self, device: torch.device) -> bool:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 2, 64, 16, generator=g) for _ in range(3))
        w = self.window_size
        t = torch.arange(64)
        band = ((t[:, None] - t[None, :]) >= 0) & ((t[:, None] - t[None, :]) < w)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
        out = _flash_window(*(t_.to(device, torch.bfloat16) for t_ in (q, k, v)), w)
        return torch.allclose(out.float().cpu(), ref, atol=2e-2)

    def state_size(self, seq_len: int) -> int:
        return self.window_size

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        state = super().init_state(batch_size)
        state["pos"] = torch.zeros((), dtype=torch.long, device=self._param().device)
        return state

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        b = x_t.shape[0]
        q, k, v = self.qkv(x_t).view(b, 3, self.num_heads, 1, self.head_dim).unbind(1)
        pos = state["pos"].view(1)
        k_win = torch.cat([state["k"], rotary(k, pos)], dim=2)
        v_win = torch.cat([state["v"], v], dim=2)
        weights = (rotary(q, pos) @ k_win.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(-1)
        o = (weights @ v_win).reshape(b, self.d_model)
        start = max(0, k_win.shape[2] - (self.window_size - 1))  # keep what the next token can still see
        new = {"k": k_win[:, :, start:], "v": v_win[:, :, start:], "pos": state["pos"] + 1}
        return self.out_proj(o), new
