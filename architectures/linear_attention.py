"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

phi(x) = elu(x) + 1 on queries and keys; o_t = sum_s phi(q_t).phi(k_s) v_s / sum_s phi(q_t).phi(k_s).
TSS per value channel: the key head dim (the state is a K x V matrix per head).
Fast path on CUDA: flash-linear-attention's chunked kernel (unnormalised; the
denominator rides along as an extra value channel); on a CPU (fp32, fp64) the C kernel
`architectures.linear_recurrence_kernel` (kernel "linear-recurrence-cpu") trains.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import require_divisible, require_positive
from architectures.fla_kernels import FlaChunked
from architectures.linear_recurrence import GatedLinearMixer, Heads
from architectures.linear_recurrence_kernel import CompiledRecurrence


class LinearAttention(CompiledRecurrence, FlaChunked, GatedLinearMixer):
    name = "linear_attention"
    chunk_size = 32  # the fastest reference chunk for training on a CPU (benchmarks/perf, L 64)
    normalize = True

    def __init__(self, d_model: int, num_heads: int = 1, kernel: str = "auto"):
        # one head: the paper's head dim 64 at the suite's d_model 64
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads)
        require_divisible(self.name, "d_model", d_model, "num_heads", num_heads)
        self.num_heads = num_heads
        self.key_dim = self.value_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def heads(self, x: Tensor) -> Heads:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.key_dim).permute(2, 0, 3, 1, 4)
        return Heads(F.elu(q) + 1, F.elu(k) + 1, v, None)

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        b, h, length, v = o.shape
        return self.out_proj(o.transpose(1, 2).reshape(b, length, h * v))
