"""RWKV-7 "Goose" time mixing (Peng et al. 2025, arXiv 2503.14456), as flash-linear-attention's
`fla/layers/rwkv7.py` and Zoology's `add_rwkv7` configure it.

Token shift: x'_t = x_t + (x_{t-1} - x_t) * mu for each of r, w, k, v, a, g (mu learned per channel).
r = W_r x'_r, k = W_k x'_k, v = W_v x'_v; log decay log w_t = -exp(-1/2) sigmoid(LoRA_w(x'_w)) (fla's
form, so w_t in (exp(-e^{-1/2}), 1)), in-context learning rate a_t = sigmoid(LoRA_a(x'_a)), output gate
g = LoRA_g(x'_g) (sigmoid inside). Removal key kappa_hat = normalize(k * k_k) per head, k <- k (1 + (a - 1) k_a).
The generalized delta rule, per head (state V x K):

    S_t = S_{t-1} (diag(w_t) - kappa_hat_t (a_t * kappa_hat_t)^T) + v_t k_t^T,   o_t = S_t r_t

then GroupNorm per head (eps head_dim * 1e-5), the bonus term (r_t . (k_t * r_k)) v_t, the gate, and the
output projection: y = W_o ((GroupNorm(o) + bonus) * g).

Sizes: Zoology's add_rwkv7 (head_dim 64 at d_model 64, i.e. one head; decay and a LoRA rank 16, gate
rank 64). Initialisation: RWKV-7's (RWKV-LM / fla's `_initialize_weights`) for the first layer of a
2-layer model: the mu's, k_k, k_a, r_k and the LoRA biases by channel position, LoRA down-projections
zero and up-projections orthogonal (gain 0.1), W_r, W_v orthogonal, W_k orthogonal (gain 0.1).

Simplified, and why:
- no value residual (v_first / LoRA_v): it mixes in the first layer's values, which a single mixer
  does not see; fla's layer 0 has none either, and the init is layer 0's;
- W_o starts at PyTorch's default, not at zero as in RWKV-LM: a zero output projection makes the
  mixer's output identically zero at initialisation, so the checks that compare outputs (readout,
  decoding, bf16) would compare zeros;
- the decay is fla's -exp(-1/2) sigmoid(.) (RWKV-LM's -softplus(-.) - 1/2 bounds it the same way).

Per value channel the operator on v is the generalized delta rule's, the same for every value channel
of a head (`architectures.delta_rule.dplr_matrix`); the bonus term is diagonal in time and sits in
`readout` with the norm and the gate. TSS per channel: the head dim. Reference path:
`architectures.delta_rule.chunked_dplr` (chunked, one triangular solve per chunk); on a CPU (fp32, fp64)
the C kernel `architectures.delta_rule.compiled_dplr` (kernel "delta-rule-cpu"), and there the readout
(norm, bonus, gate) in C too (`_CompiledReadout`).
"""

from __future__ import annotations

import ctypes
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures import cpu_kernels
from architectures.base import Mixer, MixerOperator, config_error, require_positive
from architectures.delta_rule import chunked_dplr, compiled_available, compiled_dplr, dplr_matrix, dplr_step, l2_normalize

LOG_W_MIN = -math.exp(-0.5)  # fla's decay: log w = LOG_W_MIN * sigmoid(.)


class LoRA(nn.Module):
    """up(act(down x)) (+ bias): RWKV-7's low-rank projections."""

    def __init__(self, d_in: int, d_out: int, rank: int, activation: str | None, bias: bool = True):
        super().__init__()
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out, bias=bias)
        self.activation = activation
        with torch.no_grad():  # RWKV-LM: w1/a1/g1 zero, w2/a2/g2 orthogonal with gain 0.1
            self.down.weight.zero_()
            nn.init.orthogonal_(self.up.weight, gain=0.1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.down(x)
        if self.activation == "tanh":
            h = torch.tanh(h)
        elif self.activation == "sigmoid":
            h = torch.sigmoid(h)
        return self.up(h)


class _CompiledReadout(torch.autograd.Function):
    """`RWKV7.finish` before the output projection, (GroupNorm(o) + (r . (k * r_k)) v) * g, by the C kernel of
    `architectures/csrc/delta_rule.c`: o, r, k, v `(B, L, H, d)` and g `(B, L, H * d)`, contiguous."""

    @staticmethod
    def forward(ctx, o, r, k, v, g, weight, bias, r_k, eps):
        bsz, length, h, d = o.shape
        lib = cpu_kernels.load("delta_rule")
        suffix = "f32" if o.dtype == torch.float32 else "f64"
        y, stats = torch.empty_like(o), o.new_empty(bsz * length * h, 3)
        pointers = map(cpu_kernels.pointer, (o, r, k, v, g, weight, bias, r_k, y, stats))
        getattr(lib, f"rk_readout_forward_{suffix}")(*pointers, bsz * length * h, h, d, ctypes.c_double(eps))
        ctx.save_for_backward(o, r, k, v, g, weight, bias, r_k, stats)
        ctx.suffix = suffix
        return y

    @staticmethod
    def backward(ctx, gy):
        o, r, k, v, g, weight, bias, r_k, stats = ctx.saved_tensors
        bsz, length, h, d = o.shape
        grads = [torch.empty_like(t) for t in (o, r, k, v, g)]
        dw, db, drk = (torch.zeros_like(t) for t in (weight, bias, r_k))
        lib = cpu_kernels.load("delta_rule")
        pointers = map(cpu_kernels.pointer, (o, r, k, v, g, weight, bias, r_k, stats, gy.contiguous(), *grads, dw, db, drk))
        getattr(lib, f"rk_readout_backward_{ctx.suffix}")(*pointers, bsz * length * h, h, d)
        return *grads, dw, db, drk, None


class RWKV7(Mixer):
    name = "rwkv7"
    chunk_size = 16  # the reference path's chunk (GPUs, bf16, kernel="reference"; a CPU trains in the C kernel)

    def __init__(
        self,
        d_model: int,
        num_heads: int = 1,  # Zoology's head_dim 64 at d_model 64
        decay_low_rank_dim: int = 16,  # Zoology's add_rwkv7
        a_low_rank_dim: int = 16,
        gate_low_rank_dim: int = 64,
        norm_eps: float = 1e-5,
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        require_positive(
            self.name,
            num_heads=num_heads,
            decay_low_rank_dim=decay_low_rank_dim,
            a_low_rank_dim=a_low_rank_dim,
            gate_low_rank_dim=gate_low_rank_dim,
        )
        if d_model % num_heads:
            raise config_error(self.name, "num_heads", f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        D = d_model
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (nn.Parameter(torch.zeros(D)) for _ in range(6))
        self.k_k, self.k_a = nn.Parameter(torch.zeros(D)), nn.Parameter(torch.zeros(D))
        self.r_k = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.r_proj, self.k_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.v_proj, self.o_proj = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
        self.w_lora = LoRA(D, D, decay_low_rank_dim, "tanh")
        self.a_lora = LoRA(D, D, a_low_rank_dim, None)
        self.g_lora = LoRA(D, D, gate_low_rank_dim, "sigmoid", bias=False)
        self.g_norm = nn.GroupNorm(num_heads, D, eps=self.head_dim * norm_eps)
        self._init_rwkv7(layer=0, n_layers=2)

    @torch.no_grad()
    def _init_rwkv7(self, layer: int, n_layers: int) -> None:
        D = self.d_model
        ratio_0_to_1 = layer / (n_layers - 1)
        ratio_1_to_almost0 = 1.0 - layer / n_layers
        n = torch.arange(D, dtype=torch.float64)
        ddd = n / D
        linear = n / max(D - 1, 1) - 0.5
        half = max((self.head_dim - 1) / 2, 0.5)
        zigzag = ((n % self.head_dim) - (self.head_dim - 1) / 2) / half
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (n / max(D - 1, 1)) ** (1 + ratio_0_to_1**0.3)
        for p, power in ((self.x_r, 0.2), (self.x_w, 0.9), (self.x_k, 0.7), (self.x_v, 0.7), (self.x_a, 0.9), (self.x_g, 0.2)):
            p.copy_(1.0 - ddd ** (power * ratio_1_to_almost0))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        self.k_k.copy_(0.71 - linear * 0.1)
        self.w_lora.up.bias.copy_(www + 0.5 + zigzag * 2.5)
        self.a_lora.up.bias.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        self.g_norm.weight.fill_(((layer + 1) / n_layers) ** 0.7)
        nn.init.orthogonal_(self.r_proj.weight)
        nn.init.orthogonal_(self.k_proj.weight, gain=0.1)
        nn.init.orthogonal_(self.v_proj.weight)

    def _heads(self, x: Tensor, prev: Tensor) -> dict[str, Tensor]:
        """Everything but the recurrence, from x `(B, L, D)` and the token before each position `prev`."""
        b, length, _ = x.shape
        delta = prev - x
        r = self.r_proj(torch.addcmul(x, delta, self.x_r))  # x + delta * mu, one op forward and back
        log_w = LOG_W_MIN * torch.sigmoid(self.w_lora(torch.addcmul(x, delta, self.x_w)))
        k = self.k_proj(torch.addcmul(x, delta, self.x_k))
        v = self.v_proj(torch.addcmul(x, delta, self.x_v))
        a = torch.sigmoid(self.a_lora(torch.addcmul(x, delta, self.x_a)))
        g = self.g_lora(torch.addcmul(x, delta, self.x_g))

        def split(t: Tensor) -> Tensor:
            return t.view(b, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, K)

        kk = l2_normalize(split(k * self.k_k), 1e-12, compiled=self.kernel_choice != "reference")
        k = k * (1 + (a - 1) * self.k_a)
        r, k, v, a, log_w = split(r), split(k), split(v), split(a), split(log_w)
        return {"r": r, "k": k, "v": v, "a": kk, "b": -kk * a, "log_w": log_w, "g": g}

    def heads(self, x: Tensor) -> dict[str, Tensor]:
        return self._heads(x, F.pad(x, (0, 0, 1, -1)))  # token shift: x_{t-1}, zero before the first token

    def _recurrence(self, hd: dict[str, Tensor], v: Tensor | None = None, compiled: bool = True) -> Tensor:
        v = hd["v"] if v is None else v
        inputs = (hd["r"], hd["k"], v, hd["a"], hd["b"], hd["log_w"])
        if compiled and self.kernel_choice != "reference" and compiled_available(*inputs):
            self.kernel = "delta-rule-cpu"
            return compiled_dplr(*inputs)[0]
        self.kernel = "reference"
        return chunked_dplr(hd["r"], hd["k"], v, hd["a"], hd["b"], hd["log_w"], self.chunk_size, log_w_min=LOG_W_MIN)[0]

    def _group_norm(self, o: Tensor) -> Tensor:
        """`g_norm` (GroupNorm, one group per head) of o `(B, L, H, d)`, as a layer norm over each head's d
        channels and g_norm's affine: the same map, and on a CPU several times faster than group_norm's
        kernel at these shapes."""
        norm = self.g_norm
        if self.num_heads == 1:
            return F.layer_norm(o, (self.head_dim,), norm.weight, norm.bias, norm.eps)
        shape = (self.num_heads, self.head_dim)
        return F.layer_norm(o, (self.head_dim,), eps=norm.eps) * norm.weight.view(shape) + norm.bias.view(shape)

    def finish(self, o: Tensor, hd: dict[str, Tensor]) -> Tensor:
        """GroupNorm per head, the bonus (r . (k * r_k)) v, the gate, the output projection; o `(B, H, L, V)`."""
        b, h, length, d = o.shape
        heads = [t.transpose(1, 2) for t in (o, hd["r"], hd["k"], hd["v"])]  # (B, L, H, d): free for the kernel's o
        if self.kernel_choice != "reference" and compiled_available(*heads, hd["g"], self.g_norm.weight, self.r_k):
            norm = self.g_norm
            y = _CompiledReadout.apply(*(t.contiguous() for t in (*heads, hd["g"])), norm.weight, norm.bias, self.r_k, norm.eps)
            return self.o_proj(y.view(b, length, h * d))
        o = self._group_norm(o.transpose(1, 2))
        bonus = (hd["r"] * hd["k"] * self.r_k[:, None]).sum(-1, keepdim=True) * hd["v"]  # (B, H, L, V)
        return self.o_proj((o + bonus.transpose(1, 2)).reshape(b, length, h * d) * hd["g"])

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        hd = self.heads(x)
        return self.finish(self._recurrence(hd), hd)

    def _to_channels(self, t: Tensor) -> Tensor:
        b, h, length, d = t.shape
        return t.permute(0, 1, 3, 2).reshape(b, h * d, length)

    def operator(self, x: Tensor) -> MixerOperator:
        self.check_input(x)
        hd = self.heads(x)
        T = dplr_matrix(hd["r"], hd["k"], hd["a"], hd["b"], hd["log_w"]).to(x.dtype)  # (B, H, L, L)
        b, h, length, _ = T.shape
        matrix = T.unsqueeze(2).expand(b, h, self.head_dim, length, length).reshape(b, h * self.head_dim, length, length)
        return MixerOperator(matrix, self._to_channels(hd["v"]), self._to_channels(self._recurrence(hd)))

    def frozen(self, x: Tensor):
        """Values in, recurrence outputs out, with r, w, k, kappa_hat, a of `x` (the chunked path, which
        functorch's transforms can batch; the C kernel's cannot)."""
        hd = self.heads(x)

        def mix(inputs: Tensor) -> Tensor:
            n, _, length = inputs.shape
            v = inputs.reshape(n, self.num_heads, self.head_dim, length).transpose(-1, -2)
            return self._to_channels(self._recurrence(hd, v, compiled=False))

        return mix

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        b, _, length = outputs.shape
        o = outputs.reshape(b, self.num_heads, self.head_dim, length).transpose(-1, -2)
        return self.finish(o, self.heads(x))

    def state_size(self, seq_len: int) -> int:
        return self.head_dim

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        return {
            "S": p.new_zeros(batch_size, self.num_heads, self.head_dim, self.head_dim),  # key-major S^T
            "prev": p.new_zeros(batch_size, self.d_model),  # the token shift's last input
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        hd = self._heads(x_t.unsqueeze(1), state["prev"].unsqueeze(1))
        o, S = dplr_step(state["S"], *(hd[n][:, :, 0] for n in ("r", "k", "v", "a", "b", "log_w")))
        return self.finish(o.unsqueeze(2), hd)[:, 0], {"S": S, "prev": x_t}
