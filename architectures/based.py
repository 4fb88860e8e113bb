"""Based's linear attention (Arora et al. 2024, "Simple linear attention language models balance
the recall-throughput tradeoff").

Queries and keys are projected to feature_dim = 16 and lifted by the 2nd-order Taylor map
phi(x) = [1, x / d^(1/4), (x (x) x) / (sqrt(2) sqrt(d))] (1 + d + d^2 = 273 features), so
phi(q).phi(k) ~ exp(q.k / sqrt(d)); normalised linear attention over those features. (Based's
full model interleaves these layers with small sliding-window attention and short convolutions;
this mixer is its linear-attention layer.) TSS per value channel: 1 + d + d^2.
Fast path: flash-linear-attention's chunk_gla without decay.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from architectures.base import require_divisible, require_positive
from architectures.fla_kernels import FlaChunked
from architectures.linear_recurrence import GatedLinearMixer, Heads


def taylor_features(x: Tensor) -> Tensor:
    d = x.shape[-1]
    second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (2**0.5 * d**0.5)
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, second], dim=-1)


class Based(FlaChunked, GatedLinearMixer):
    name = "based"
    chunk_size = 64  # the fastest reference chunk for training on a CPU (benchmarks/perf, L 64)
    normalize = True

    def __init__(self, d_model: int, num_heads: int = 1, feature_dim: int = 16, kernel: str = "auto"):
        # feature_dim 16: Based's Taylor feature dimension (Arora et al. 2024; their reference configs)
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads, feature_dim=feature_dim)
        require_divisible(self.name, "d_model", d_model, "num_heads", num_heads)
        self.num_heads, self.feature_dim = num_heads, feature_dim
        self.key_dim = 1 + feature_dim + feature_dim**2
        self.value_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, num_heads * feature_dim, bias=False)
        self.k_proj = nn.Linear(d_model, num_heads * feature_dim, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def heads(self, x: Tensor) -> Heads:
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_heads, self.value_dim).transpose(1, 2)
        return Heads(taylor_features(q), taylor_features(k), v, None)

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        b, h, length, v = o.shape
        return self.out_proj(o.transpose(1, 2).reshape(b, length, h * v))
