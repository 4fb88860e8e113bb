"""Based's linear attention (Arora et al. 2024, "Simple linear attention language models balance
the recall-throughput tradeoff").

Queries and keys are projected to feature_dim = 16 and lifted by the 2nd-order Taylor map
phi(x) = [1, x / d^(1/4), (x (x) x) / (sqrt(2) sqrt(d))] (1 + d + d^2 = 273 features), so
phi(q).phi(k) ~ exp(q.k / sqrt(d)); normalised linear attention over those features. (Based's
full model interleaves these layers with small sliding-window attention and short convolutions;
this mixer is its linear-attention layer.) TSS per value channel: 1 + d + d^2.
Fast path: flash-linear-attention's chunk_gla without decay. On a CPU (fp32, fp64) up to L 256 the
forward uses phi(q).phi(k) = 1 + s / sqrt(d) + s^2 / (2 d), s = q.k, as a masked L x L product
(kernel "taylor-quadratic-cpu"): d-dim scores instead of 273-dim features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from architectures.base import require_divisible, require_positive
from architectures.fla_kernels import FlaChunked
from architectures.kernels import cpu_path_allowed
from architectures.linear_recurrence import GatedLinearMixer, Heads


def taylor_features(x: Tensor) -> Tensor:
    d = x.shape[-1]
    second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (2**0.5 * d**0.5)
    return torch.cat([torch.ones_like(x[..., :1]), x / d**0.25, second], dim=-1)


def _quadratic_fits(*tensors: Tensor) -> bool:
    """fp32/fp64 on a CPU outside autocast: where the closed form runs (GPUs keep fla's chunked kernel)."""
    dtype = tensors[0].dtype
    return (
        dtype in (torch.float32, torch.float64)
        and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
        and not torch.is_autocast_enabled("cpu")
    )


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

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        b, length, _ = x.shape
        if not cpu_path_allowed(self.kernel_choice, x.device) or length > 256 or not _quadratic_fits(x, self.q_proj.weight):
            hd = self.heads(x)
            return self.finish(self._recurrence(hd), hd)
        self.kernel = "taylor-quadratic-cpu"
        q = self.q_proj(x).view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_heads, self.value_dim).transpose(1, 2)
        d = self.feature_dim
        s = q @ k.transpose(-1, -2)
        scores = (1 + s / d**0.5 + s.square() / (2 * d)).tril()  # phi(q_t).phi(k_s), s <= t
        o = (scores @ v) / scores.sum(-1, keepdim=True).clamp_min(1e-6)
        return self.finish(o, None)

    def heads(self, x: Tensor) -> Heads:
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_heads, self.value_dim).transpose(1, 2)
        return Heads(taylor_features(q), taylor_features(k), v, None)

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        b, h, length, v = o.shape
        return self.out_proj(o.transpose(1, 2).reshape(b, length, h * v))
