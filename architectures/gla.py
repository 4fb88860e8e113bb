"""Gated linear attention (Yang et al. 2023, "Gated Linear Attention Transformers with
Hardware-Efficient Training").

S_t = diag(a_t) S_{t-1} + k_t v_t^T with a data-dependent decay per key dimension
a_t = sigmoid(W2 W1 x_t + b)^(1/16) (low-rank 16, gate-logit normaliser 16);
o_t = S_t^T q_t / sqrt(d_k); per-head RMSNorm, swish output gate, output projection.
Paper defaults: 4 heads, key dim d_model/2 (expand_k 0.5), value dim d_model.
TSS per value channel: the key head dim. Fast path: flash-linear-attention's chunk_gla; on a CPU (fp32, fp64)
the C kernel `architectures.linear_recurrence_kernel` (kernel "linear-recurrence-cpu") trains.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import config_error, require_divisible, require_positive
from architectures.fla_kernels import FlaChunked
from architectures.linear_recurrence import GatedLinearMixer, Heads
from architectures.linear_recurrence_kernel import CompiledRecurrence


class GLA(CompiledRecurrence, FlaChunked, GatedLinearMixer):
    name = "gla"
    chunk_size = 8  # the fastest reference chunk for training on a CPU (benchmarks/perf, L 64)

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,  # Yang et al. 2023 (and fla's GatedLinearAttention): 4 heads
        expand_k: float = 0.5,  # key dim d_model / 2, as in the paper
        expand_v: float = 1.0,
        gate_low_rank: int = 16,  # low-rank gate projection, rank 16 as in the paper
        gate_logit_normalizer: float = 16.0,  # the paper's tau = 16 in sigmoid(.)^(1/tau)
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads, gate_low_rank=gate_low_rank)
        key, value = int(d_model * expand_k), int(d_model * expand_v)
        if key < num_heads or value < num_heads:
            raise config_error(self.name, "expand_k", f"key dim {key} / value dim {value} smaller than num_heads={num_heads}")
        require_divisible(self.name, "d_model * expand_k", key, "num_heads", num_heads)
        require_divisible(self.name, "d_model * expand_v", value, "num_heads", num_heads)
        if gate_logit_normalizer <= 0:
            raise config_error(self.name, "gate_logit_normalizer", f"must be > 0, got {gate_logit_normalizer}")
        self.num_heads, self.key_dim, self.value_dim = num_heads, key // num_heads, value // num_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.q_proj, self.k_proj = nn.Linear(d_model, key, bias=False), nn.Linear(d_model, key, bias=False)
        self.v_proj, self.g_proj = nn.Linear(d_model, value, bias=False), nn.Linear(d_model, value, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank, bias=False), nn.Linear(gate_low_rank, key))
        self.norm = nn.RMSNorm(self.value_dim, eps=1e-5)
        self.out_proj = nn.Linear(value, d_model, bias=False)

    def _split(self, t: Tensor, dim: int) -> Tensor:
        b, length, _ = t.shape
        return t.view(b, length, self.num_heads, dim).transpose(1, 2)

    def heads(self, x: Tensor) -> Heads:
        q = self._split(self.q_proj(x), self.key_dim) * self.key_dim**-0.5
        k = self._split(self.k_proj(x), self.key_dim)
        v = self._split(self.v_proj(x), self.value_dim)
        log_a = self._split(F.logsigmoid(self.gk_proj(x)), self.key_dim) / self.gate_logit_normalizer
        return Heads(q, k, v, log_a, ctx=x)

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        b, h, length, v = o.shape
        o = self.norm(o).transpose(1, 2).reshape(b, length, h * v)
        return self.out_proj(o * F.silu(self.g_proj(hd.ctx)))
