"""Sliding-window (local) causal softmax attention: each token attends to itself and the
w - 1 tokens before it (Beltagy et al. 2020, "Longformer"; used as the local mixer of Based,
Arora et al. 2024). Rotary positions, one head (as `attention`); window 16 (Based uses 64-128
at sequence length 2k; scaled to the suite's 64-512).

Fast path (shared with `attention`): flash-attn's `flash_attn_func(window_size=(w - 1, 0))` on
CUDA for fp16/bf16 inputs when it imports and matches; otherwise SDPA with a banded mask.
TSS per channel: w - 1, the past tokens a window reaches (its blocks' rank bound); the cache holds
those w - 1 keys and values and the position counter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from architectures.attention import Attention, rotary
from architectures.base import require_positive


class SlidingWindowAttention(Attention):
    name = "sliding_window"

    def __init__(self, d_model: int, window_size: int = 16, num_heads: int = 1, kernel: str = "auto"):
        # window 16: Based's sliding-window layers use 64-128 at L = 2k (Arora et al. 2024), scaled to L 64-512
        require_positive(self.name, window_size=window_size)
        super().__init__(d_model, num_heads=num_heads, kernel=kernel)
        self.window_size = window_size

    def state_size(self, seq_len: int) -> int:
        # block T[i:, :i] reaches back w - 1 tokens (each token sees itself and the w - 1 before it),
        # so its rank is at most w - 1: the keys and values the decoding cache holds
        return self.window_size - 1

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
