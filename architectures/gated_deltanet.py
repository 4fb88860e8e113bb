"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta
Rule", arXiv 2412.06464), as flash-linear-attention's layer (`fla/layers/gated_deltanet.py`).

DeltaNet (architectures/deltanet.py: short conv 4 + SiLU on q, k, v, L2-normalized q and k, q scaled by
d_k^-1/2, beta = sigmoid(W_b x)) with a data-dependent scalar decay per head, Mamba-2 style:

    alpha_t = exp(-exp(A_log) * softplus(W_a x_t + dt_bias)),
    S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,   o_t = S_t q_t

then fla's gated RMSNorm per head, RMSNorm(o) * SiLU(W_g x) (the paper's output gate; `use_gate=False`
gives a plain RMSNorm, as Zoology's add_gated_delta_net trains it), and the output projection.
Initialisation as fla's: A ~ U(0, 16) (A_log = log A), dt log-uniform in [1e-3, 1e-1] (dt_bias its inverse
softplus), PyTorch's defaults elsewhere. Sizes: Zoology's 2 heads of head_dim d_model / 2, expand_v 2
(fla's and Zoology's value expansion).

Per value channel the operator on v is tril(Q K^T * G) (I + tril(diag(beta) K K^T * G, -1))^{-1} diag(beta)
with G[t, s] = prod_{m=s+1..t} alpha_m, the same for every value channel of a head. TSS per channel: the
key head dim. Reference path: `architectures.delta_rule.chunked_delta_rule` with the gate; on a CPU the C
kernels, as DeltaNet's (kernel "delta-rule-cpu").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import config_error, init_step_sizes, require_positive
from architectures.delta_rule import rms_norm_gate
from architectures.deltanet import DeltaHeads, DeltaRuleMixer


class GatedDeltaNet(DeltaRuleMixer):
    name = "gated_deltanet"

    def __init__(
        self,
        d_model: int,
        num_heads: int = 2,  # Zoology's add_gated_delta_net
        head_dim: int | None = None,  # key head dim; None: d_model // num_heads (Zoology's GatedDeltaNet)
        expand_v: float = 2.0,  # fla's and Zoology's default
        use_gate: bool = True,  # fla's default and the paper's output gate
        conv_size: int = 4,
        conv_bias: bool = False,
        norm_eps: float = 1e-5,
        dt_min: float = 1e-3,  # fla's hard-coded dt range
        dt_max: float = 1e-1,
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        require_positive(self.name, num_heads=num_heads, conv_size=conv_size)
        if head_dim is None:
            if d_model % num_heads:
                raise config_error(self.name, "num_heads", f"d_model={d_model} is not divisible by num_heads={num_heads}")
            head_dim = d_model // num_heads
        require_positive(self.name, head_dim=head_dim)
        value_dim = head_dim * expand_v
        if value_dim != int(value_dim) or value_dim < 1:
            raise config_error(self.name, "expand_v", f"head_dim * expand_v = {value_dim} is not a positive integer")
        self.num_heads, self.key_dim, self.value_dim = num_heads, head_dim, int(value_dim)
        self.use_gate = use_gate
        self._build(d_model, conv_size, conv_bias)
        self.a_proj = nn.Linear(d_model, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(0, 16)))
        self.dt_bias = nn.Parameter(init_step_sizes(self.name, num_heads, dt_min, dt_max))
        for p in (self.A_log, self.dt_bias):
            p._no_weight_decay = True  # as in fla
        if use_gate:
            self.g_proj = nn.Linear(d_model, num_heads * self.value_dim, bias=False)
        self.norm = nn.RMSNorm(self.value_dim, eps=norm_eps)

    def _decay(self, x: Tensor) -> Tensor:
        return -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)  # (B, L, H), <= 0

    def finish(self, o: Tensor, hd: DeltaHeads) -> Tensor:
        b, h, length, v = o.shape
        gate = self.g_proj(hd.x).view(b, length, h, v) if self.use_gate else None
        y = rms_norm_gate(o.transpose(1, 2), self.norm, gate, compiled=self.kernel_choice != "reference")  # (B, L, H, V)
        return self.o_proj(y.reshape(b, length, h * v))
