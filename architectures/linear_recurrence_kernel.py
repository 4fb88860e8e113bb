"""The gated linear recurrence of `architectures.linear_recurrence` by the C kernel `csrc/linear_recurrence.c`.

S_t = diag(a_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t from S_0 = 0, token by token with the state in cache,
the states recomputed from checkpoints in the backward; fp32 and fp64 on a CPU (check `compiled_available`).
At the training shapes (L 64) several times faster than `chunked_gla`'s many small products for GLA's and WLA's
small heads, a little for linear attention's 64 x 64; for Based's 273 x 64 state it is slower than the one-chunk
product, which Based keeps.
`CompiledRecurrence` routes a `GatedLinearMixer`'s forward through it (kernel "linear-recurrence-cpu");
`operator`, `frozen` and `step` keep the PyTorch path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from architectures import cpu_kernels
from architectures.kernels import cpu_path_allowed


class _CompiledLinear(torch.autograd.Function):
    """Time-major, contiguous, one dtype: q, k `(B, L, H, K)`, v `(B, L, H, V)`, w `(B, L, H, K)` (a decay per
    key dim), `(B, L, H)` (per head) or None. Outputs o `(B, L, H, V)`."""

    @staticmethod
    def forward(ctx, q, k, v, w, keep):
        bsz, length, h, kdim = q.shape
        vdim = v.shape[-1]
        lib = cpu_kernels.load("linear_recurrence")
        suffix = "f32" if q.dtype == torch.float32 else "f64"
        mode = 0 if w is None else (2 if w.dim() == 4 else 1)
        o = torch.empty_like(v)
        ckpt = v.new_empty(bsz, h, lib.lr_chunks(length, kdim, vdim), kdim, vdim) if keep else None
        tensors = (q, k, v, w, o, ckpt)
        cpu_kernels.call(
            "linear_recurrence", f"lr_forward_{suffix}", *tensors, bsz, h, length, kdim, vdim, mode, who="linear recurrence"
        )
        ctx.save_for_backward(q, k, v, w, ckpt)
        ctx.mode, ctx.suffix = mode, suffix
        return o

    @staticmethod
    def backward(ctx, go):
        q, k, v, w, ckpt = ctx.saved_tensors
        bsz, length, h, kdim = q.shape
        go = go.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dw = None if w is None else torch.empty_like(w)
        tensors, sizes = (q, k, v, w, ckpt, go, dq, dk, dv, dw), (bsz, h, length, kdim, v.shape[-1], ctx.mode)
        cpu_kernels.call("linear_recurrence", f"lr_backward_{ctx.suffix}", *tensors, *sizes, who="linear recurrence")
        return dq, dk, dv, dw, None


def compiled_available(*tensors: Tensor | None) -> bool:
    """Whether the C kernel can run on these tensors: fp32 or fp64 alike, on a CPU, outside autocast, built."""
    tensors = [t for t in tensors if t is not None]
    dtype = tensors[0].dtype
    return (
        dtype in (torch.float32, torch.float64)
        and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
        and not torch.is_autocast_enabled("cpu")
        and cpu_kernels.load("linear_recurrence") is not None
    )


def compiled_linear(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor | None, normalize: bool = False) -> Tensor:
    """`chunked_gla`'s outputs `(B, H, L, V)` (a view of time-major memory) from S_0 = 0: q, k `(B, H, L, K)`,
    v `(B, H, L, V)`, log_a `(B, H, L, K)`, `(B, H, L, 1)` or None. `normalize` (no decay): divided by
    q_t . sum_s k_s (clamped at 1e-6), the denominator of `GatedLinearMixer._recurrence`'s channel of ones."""
    den = None
    if normalize:  # the channel of ones, q_t . sum_s k_s, apart: the kernel's rows keep their 16/32/64 values
        if log_a is not None:
            raise ValueError("compiled_linear: normalize takes no decay")
        den = (q * k.cumsum(-2)).sum(-1, keepdim=True)
    v = v.transpose(1, 2)
    w = None
    if log_a is not None:
        w = (log_a[..., 0] if log_a.shape[-1] == 1 else log_a).exp().transpose(1, 2).contiguous()
    q, k, v = (t.contiguous() for t in (q.transpose(1, 2), k.transpose(1, 2), v))
    keep = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, w))
    o = _CompiledLinear.apply(q, k, v, w, keep).transpose(1, 2)
    return o if den is None else o / den.clamp_min(1e-6)


class CompiledRecurrence:
    """Mixin ahead of `GatedLinearMixer`: its forward's recurrence by the C kernel where it runs (fp32/fp64 on a
    CPU, outside autocast, kernel not "reference"), else the mixer's own path."""

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        hd = self.heads(x)
        if cpu_path_allowed(self.kernel_choice, x.device) and compiled_available(hd.q, hd.k, hd.v, hd.log_a):
            self.kernel = "linear-recurrence-cpu"
            o = compiled_linear(hd.q, hd.k, hd.v, hd.log_a, self.normalize)
        else:
            o = self._recurrence(hd)
        return self.finish(o, hd)
