"""Weighted linear attention: linear attention with a learned decay per head that does not depend
on the input, as in RetNet's retention (Sun et al. 2023, "Retentive Network").

S_t = gamma_h S_{t-1} + k_t v_t^T, o_t = S_t^T q_t; gamma_h = sigmoid(w_h) is learned and
initialised at RetNet's 1 - 2^(-5 - h); keys scaled by d_k^-1/2; per-head group norm, swish
gate, output projection (RetNet's block; its xPos rotation is left out). 4 heads (RetNet uses
head dim 256 at scale; scaled down). TSS per value channel: the key head dim.
Fast path: flash-linear-attention's chunk_gla with the decay broadcast over keys; on a CPU (fp32, fp64) the
C kernel `architectures.linear_recurrence_kernel` (kernel "linear-recurrence-cpu") trains.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import require_divisible, require_positive
from architectures.fla_kernels import FlaChunked
from architectures.linear_recurrence import GatedLinearMixer, Heads
from architectures.linear_recurrence_kernel import CompiledRecurrence


class WLA(CompiledRecurrence, FlaChunked, GatedLinearMixer):
    name = "wla"

    def __init__(self, d_model: int, num_heads: int = 4, kernel: str = "auto"):
        # 4 heads: RetNet's per-head decays 1 - 2^(-5 - h) over a few heads (Sun et al. 2023), scaled down
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads)
        require_divisible(self.name, "d_model", d_model, "num_heads", num_heads)
        self.num_heads = num_heads
        self.key_dim = self.value_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.gate = nn.Linear(d_model, d_model, bias=False)
        gamma = 1 - 2.0 ** (-5 - torch.arange(num_heads, dtype=torch.float32))
        self.decay_logit = nn.Parameter(torch.log(gamma / (1 - gamma)))  # sigmoid(decay_logit) = gamma
        self.norm = nn.GroupNorm(num_heads, d_model, affine=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def heads(self, x: Tensor) -> Heads:
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.key_dim).permute(2, 0, 3, 1, 4)
        log_a = F.logsigmoid(self.decay_logit).view(1, -1, 1, 1).expand(b, -1, length, 1)
        return Heads(q, k / math.sqrt(self.key_dim), v, log_a, ctx=x)

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        b, h, length, v = o.shape
        o = self.norm(o.transpose(1, 2).reshape(b * length, h * v)).view(b, length, h * v)
        return self.out_proj(F.silu(self.gate(hd.ctx)) * o)
