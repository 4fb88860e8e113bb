"""The delta rule in chunked (WY / UT) form, and its generalization with vector decays (RWKV-7).

Delta rule (DeltaNet: Schlag et al. 2021, Yang et al. 2024 arXiv 2406.06484; gated: Yang, Kautz &
Hatamizadeh 2024 arXiv 2412.06464), key-major state S_t in R^{K x V}:

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t

(alpha_t = exp(log_alpha_t) in (0, 1], one per head; none: alpha = 1). Written as
S_t = alpha_t S_{t-1} + k_t u_t^T with the "pseudo-values" u_t = beta_t (v_t - alpha_t S_{t-1}^T k_t).

Chunked form (`chunked_delta_rule`): cut the sequence into chunks of C steps; c = cumulative log alpha
inside a chunk, Gamma[t, s] = exp(c_t - c_s) (s <= t, every exponent <= 0). With S_0 the state entering
the chunk, u = T (beta v - beta e^c k S_0), T = (I + tril(diag(beta) (K K^T * Gamma), -1))^{-1}, so
u = U - W S_0 with U = T diag(beta) V and W = T diag(beta e^c) K: one unit-lower-triangular solve per
chunk, for every chunk at once. Then o = P U + (e^c Q - P W) S_0 with P = tril(Q K^T * Gamma), and the
state passes to the next chunk as S_C = (e^{c_C} I - Kd^T W) S_0 + Kd^T U, Kd = k e^{c_C - c}: a loop over
chunks (L / C steps of one K x K by K x V product), never over time steps.

Generalized delta rule (`chunked_dplr`, RWKV-7: Peng et al. 2025 arXiv 2503.14456; fla's
`generalized_delta_rule/dplr`): a diagonal-plus-rank-one transition with a decay per key dimension,

    S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,    o_t = S_t^T q_t,    w_t = exp(log_w_t),

which is RWKV-7's S_t = S_{t-1} (diag(w_t) - kappa_t (a_t * kappa_t)^T) + v_t k_t^T written key-major with
a = kappa, b = -(a * kappa). Same construction: x_t = a_t^T S_{t-1} solves one unit-lower-triangular
system per chunk, x = (I - A_ab)^{-1} (A_ak v + (a e^{c_{t-1}}) S_0).

`recurrent_delta_rule` / `recurrent_dplr` are the step-by-step references (and the decoding steps).
`compiled_delta_rule` / `compiled_dplr` run the same recurrence step by step in the C kernels of
`architectures/csrc/delta_rule.c` (fp32 / fp64 on a CPU; check `compiled_available`): at the training shapes
(L 64) several times faster than the chunked form's many small products and solves. `l2_normalize` and
`rms_norm_gate` (the mixers' q/k normalization and readout) take C kernels there too.
`delta_rule_matrix` / `dplr_matrix` are the operators (per head, on the values) in closed form: the
whole sequence as one chunk with no state entering it.
"""

from __future__ import annotations

import contextlib
import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from architectures import cpu_kernels


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Triangular solves in >= fp32 (bf16/fp16 have no CPU solve and too little precision for one)."""
    return torch.promote_types(dtype, torch.float32)


@contextlib.contextmanager
def _no_autocast(device: torch.device):
    with torch.autocast(device.type, enabled=False):
        yield


def l2_normalize(x: Tensor, eps: float, scaled: int = 0, scale: float = 1.0, compiled: bool = True) -> Tensor:
    """F.normalize's map over the last dim, x / max(||x||, eps), the first `scaled` rows of dim -2 then times
    `scale` (the queries' d_k^-1/2 where q and k are normalized together). By the C kernel where it runs (one
    pass each way), else as x * rsqrt(max(||x||^2, eps^2)): products where F.normalize divides."""
    if compiled and compiled_available(x):
        return _CompiledL2Norm.apply(x, eps, scaled, scale)
    y = x * torch.rsqrt(x.square().sum(-1, keepdim=True).clamp_min(eps * eps))
    if scaled:
        factors = torch.ones(x.shape[-2], 1, dtype=x.dtype, device=x.device)
        factors[:scaled] = scale
        y = y * factors
    return y


def _chunks(t: Tensor, chunk: int, pad: int) -> Tensor:
    """(B, H, L, ...) -> (B, H, n, C, ...), zero-padded at the end."""
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 3) + (0, pad))
    b, h, length = t.shape[:3]
    return t.reshape(b, h, length // chunk, chunk, *t.shape[3:])


def _pass_states(M: Tensor, N: Tensor, initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """States entering each chunk `(B, H, n, K, V)` and the final state of S_{i+1} = M_i S_i + N_i."""
    b, h, n, kdim, vdim = N.shape
    S = N.new_zeros(b, h, kdim, vdim) if initial_state is None else initial_state.to(N.dtype)
    before = []
    # unbound once: indexing chunk i of M and N would make the backward zero-fill a gradient of the
    # whole (B, H, n, K, V) tensor per chunk; unbind's backward is one stack
    for M_i, N_i in zip(M.unbind(2), N.unbind(2), strict=True):
        before.append(S)
        S = M_i @ S + N_i
    return torch.stack(before, dim=2), S


def chunked_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_alpha: Tensor | None = None,
    chunk_size: int = 16,
    initial_state: Tensor | None = None,
    with_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Outputs `(B, H, L, V)` (and the final state `(B, H, K, V)` when `with_state`) of the (gated) delta
    rule. q, k `(B, H, L, K)` (used as given: normalize and scale them before), v `(B, H, L, V)`, beta
    `(B, H, L)`, log_alpha `(B, H, L)` (<= 0) or None. Computed in >= fp32, returned in v's dtype."""
    out_dtype = v.dtype
    work = _work_dtype(out_dtype)
    with _no_autocast(q.device):
        q, k, v, beta = (t.to(work) for t in (q, k, v, beta))
        b, h, length, kdim = q.shape
        pad = (-length) % chunk_size
        # padded steps come after every real one and have beta = 0, alpha = 1: they change nothing before them
        q, k, v = (_chunks(t, chunk_size, pad) for t in (q, k, v))
        beta = _chunks(beta.unsqueeze(-1), chunk_size, pad)  # (B, H, n, C, 1)
        n = q.shape[2]
        ones = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device)
        causal, strict = ones.tril(), ones.tril(-1)
        kb = k * beta
        if log_alpha is None:
            qk, kk = q @ k.transpose(-1, -2), kb @ k.transpose(-1, -2)
            kb_c, q_c, k_end, g_end = kb, q, k, None
        else:
            c = _chunks(log_alpha.to(work).unsqueeze(-1), chunk_size, pad).cumsum(-2)  # (B, H, n, C, 1), inclusive
            gamma = (c - c.transpose(-1, -2)).masked_fill(~causal, float("-inf")).exp()  # exp(c_t - c_s), s <= t
            qk, kk = (q @ k.transpose(-1, -2)) * gamma, (kb @ k.transpose(-1, -2)) * gamma
            e_c = c.exp()
            kb_c, q_c = kb * e_c, q * e_c
            k_end = k * (c[..., -1:, :] - c).exp()
            g_end = e_c[..., -1, :]  # (B, H, n, 1): the decay over the whole chunk
        A = kk.masked_fill(~strict, 0.0)
        P = qk.masked_fill(~causal, 0.0)
        vdim = v.shape[-1]
        UW = torch.linalg.solve_triangular(A, torch.cat([v * beta, kb_c], dim=-1), upper=False, unitriangular=True)
        U, W = UW.split([vdim, kdim], dim=-1)
        out = P @ U
        state = None
        if n > 1 or initial_state is not None or with_state:
            kd_t = k_end.transpose(-1, -2)
            M = -(kd_t @ W)
            eye = torch.eye(kdim, dtype=work, device=q.device)
            M = M + (eye if g_end is None else g_end.unsqueeze(-1) * eye)
            before, state = _pass_states(M, kd_t @ U, initial_state)
            out = out + (q_c - P @ W) @ before
        out = out.reshape(b, h, n * chunk_size, vdim)[:, :, :length]
    return out.to(out_dtype), (state.to(out_dtype) if with_state else None)


def delta_rule_step(
    S: Tensor, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token: q, k `(B, H, K)`, v `(B, H, V)`, beta, log_alpha `(B, H)`; state S `(B, H, K, V)`."""
    if log_alpha is not None:
        S = S * log_alpha.exp()[..., None, None]
    u = beta.unsqueeze(-1) * (v - (k.unsqueeze(-1) * S).sum(-2))
    S = S + k.unsqueeze(-1) * u.unsqueeze(-2)
    return (q.unsqueeze(-1) * S).sum(-2), S


def recurrent_delta_rule(q, k, v, beta, log_alpha=None, initial_state=None) -> tuple[Tensor, Tensor]:
    """The step-by-step reference of `chunked_delta_rule`: outputs `(B, H, L, V)` and the final state."""
    b, h, length, kdim = q.shape
    S = v.new_zeros(b, h, kdim, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(length):
        o, S = delta_rule_step(
            S, q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t], None if log_alpha is None else log_alpha[:, :, t]
        )
        outs.append(o)
    return torch.stack(outs, dim=2), S


def delta_rule_matrix(q: Tensor, k: Tensor, beta: Tensor, log_alpha: Tensor | None = None) -> Tensor:
    """The operator `(B, H, L, L)` from values to outputs (the same for every value channel of a head):
    T = tril(Q K^T * Gamma) (I + tril(diag(beta) K K^T * Gamma, -1))^{-1} diag(beta)."""
    work = _work_dtype(q.dtype)
    q, k, beta = (t.to(work) for t in (q, k, beta))
    length = q.shape[-2]
    ones = torch.ones(length, length, dtype=torch.bool, device=q.device)
    qk, kk = q @ k.transpose(-1, -2), k @ k.transpose(-1, -2)
    if log_alpha is not None:
        c = log_alpha.to(work).cumsum(-1)
        gamma = (c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(~ones.tril(), float("-inf")).exp()
        qk, kk = qk * gamma, kk * gamma
    A = (beta.unsqueeze(-1) * kk).masked_fill(~ones.tril(-1), 0.0)
    P = qk.masked_fill(~ones.tril(), 0.0)
    T = torch.linalg.solve_triangular(A, torch.diag_embed(beta), upper=False, unitriangular=True)
    return P @ T


# ----------------------------------------------------------------------------- generalized (DPLR)


def _pairs(x: Tensor, y: Tensor, cx: Tensor, cy: Tensor, mask: Tensor, factored: bool) -> Tensor:
    """sum_d x[t, d] y[s, d] exp(cx[t, d] - cy[s, d]) where mask[t, s], else 0: `(..., C, C)`."""
    if factored:  # exponents bounded (known lower bound on log w): two scaled factors and one matmul
        ref = cy[..., :1, :]
        out = (x * (cx - ref).exp()) @ (y * (ref - cy).exp()).transpose(-1, -2)
    else:  # exponents of the kept pairs are all <= 0: stable for any decay
        gaps = (cx.unsqueeze(-2) - cy.unsqueeze(-3)).masked_fill(~mask[..., None], float("-inf"))
        out = (x.unsqueeze(-2) * y.unsqueeze(-3) * gaps.exp()).sum(-1)
    return out.masked_fill(~mask, 0.0)


def chunked_dplr(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    log_w: Tensor,
    chunk_size: int = 16,
    initial_state: Tensor | None = None,
    with_state: bool = False,
    log_w_min: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Outputs `(B, H, L, V)` (and final state) of S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,
    o_t = S_t^T q_t; q, k, a, b, log_w `(B, H, L, K)`, v `(B, H, L, V)`. `log_w_min`: a lower bound on log_w
    (RWKV-7's is -exp(-0.5)); when chunk_size * |log_w_min| is small the intra-chunk decays are factored
    into matmuls, else they are formed pairwise (always stable)."""
    out_dtype = v.dtype
    work = _work_dtype(out_dtype)
    factored = log_w_min is not None and chunk_size * abs(log_w_min) <= 30.0
    with _no_autocast(q.device):
        q, k, v, a, b, log_w = (t.to(work) for t in (q, k, v, a, b, log_w))
        bsz, h, length, kdim = q.shape
        vdim = v.shape[-1]
        pad = (-length) % chunk_size  # padded steps: k = a = b = 0, w = 1: no effect on earlier ones
        q, k, v, a, b, log_w = (_chunks(t, chunk_size, pad) for t in (q, k, v, a, b, log_w))
        n = q.shape[2]
        c = log_w.cumsum(-2)  # inclusive
        c_prev = c - log_w  # exclusive: decay from the chunk start to t - 1
        ones = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device)
        causal, strict = ones.tril(), ones.tril(-1)
        A_ab = _pairs(a, b, c_prev, c, strict, factored)
        A_ak = _pairs(a, k, c_prev, c, strict, factored)
        A_qb = _pairs(q, b, c, c, causal, factored)
        A_qk = _pairs(q, k, c, c, causal, factored)
        X = torch.linalg.solve_triangular(-A_ab, torch.cat([A_ak @ v, a * c_prev.exp()], dim=-1), upper=False, unitriangular=True)
        Xv, Xs = X.split([vdim, kdim], dim=-1)
        out = A_qb @ Xv + A_qk @ v
        state = None
        if n > 1 or initial_state is not None or with_state:
            to_end = (c[..., -1:, :] - c).exp()
            bd_t, kd_t = (b * to_end).transpose(-1, -2), (k * to_end).transpose(-1, -2)
            M = torch.diag_embed(c[..., -1, :].exp()) + bd_t @ Xs
            before, state = _pass_states(M, bd_t @ Xv + kd_t @ v, initial_state)
            out = out + (q * c.exp() + A_qb @ Xs) @ before
        out = out.reshape(bsz, h, n * chunk_size, vdim)[:, :, :length]
    return out.to(out_dtype), (state.to(out_dtype) if with_state else None)


def dplr_step(S: Tensor, q: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor]:
    """One token of `chunked_dplr`: q, k, a, b, log_w `(B, H, K)`, v `(B, H, V)`; S `(B, H, K, V)`."""
    x = (a.unsqueeze(-1) * S).sum(-2)  # a^T S_{t-1}: (B, H, V)
    S = S * log_w.exp().unsqueeze(-1) + b.unsqueeze(-1) * x.unsqueeze(-2) + k.unsqueeze(-1) * v.unsqueeze(-2)
    return (q.unsqueeze(-1) * S).sum(-2), S


def recurrent_dplr(q, k, v, a, b, log_w, initial_state=None) -> tuple[Tensor, Tensor]:
    """The step-by-step reference of `chunked_dplr`."""
    bsz, h, length, kdim = q.shape
    S = v.new_zeros(bsz, h, kdim, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(length):
        o, S = dplr_step(S, q[:, :, t], k[:, :, t], v[:, :, t], a[:, :, t], b[:, :, t], log_w[:, :, t])
        outs.append(o)
    return torch.stack(outs, dim=2), S


def dplr_matrix(q: Tensor, k: Tensor, a: Tensor, b: Tensor, log_w: Tensor) -> Tensor:
    """The operator `(B, H, L, L)` of `chunked_dplr` on the values: A_qb (I - A_ab)^{-1} A_ak + A_qk over the
    whole sequence, the pairwise decays accumulated one key dimension at a time (memory O(L^2))."""
    work = _work_dtype(q.dtype)
    q, k, a, b, log_w = (t.to(work) for t in (q, k, a, b, log_w))
    length = q.shape[-2]
    ones = torch.ones(length, length, dtype=torch.bool, device=q.device)
    causal, strict = ones.tril(), ones.tril(-1)
    c = log_w.cumsum(-2)
    c_prev = c - log_w
    shape = (*q.shape[:-1], length)
    A_ab, A_ak, A_qb, A_qk = (q.new_zeros(shape) for _ in range(4))
    for d in range(q.shape[-1]):
        prev = (c_prev[..., :, None, d] - c[..., None, :, d]).masked_fill(~strict, float("-inf")).exp()
        here = (c[..., :, None, d] - c[..., None, :, d]).masked_fill(~causal, float("-inf")).exp()
        A_ab = A_ab + a[..., :, None, d] * b[..., None, :, d] * prev
        A_ak = A_ak + a[..., :, None, d] * k[..., None, :, d] * prev
        A_qb = A_qb + q[..., :, None, d] * b[..., None, :, d] * here
        A_qk = A_qk + q[..., :, None, d] * k[..., None, :, d] * here
    return A_qb @ torch.linalg.solve_triangular(-A_ab, A_ak, upper=False, unitriangular=True) + A_qk


# ----------------------------------------------------------------------------- the C kernel


class _CompiledDPLR(torch.autograd.Function):
    """S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T, o_t = S_t^T q_t by `csrc/delta_rule.c`, time-major:
    q, k, a, b `(B, L, H, K)`, v `(B, L, H, V)`, w `(B, L, H, K)`, `(B, L, H)` (one decay per head) or None (no
    decay), all contiguous and of one dtype; initial state `(B, H, K, V)` or None. Outputs o `(B, L, H, V)`
    and the final state."""

    @staticmethod
    def forward(ctx, q, k, v, a, b, w, initial_state, keep):
        bsz, length, h, kdim = q.shape
        vdim = v.shape[-1]
        lib = cpu_kernels.load("delta_rule")
        suffix = "f32" if q.dtype == torch.float32 else "f64"
        mode = 0 if w is None else (2 if w.dim() == 4 else 1)
        o, state = torch.empty_like(v), v.new_empty(bsz, h, kdim, vdim)
        xs, ckpt = None, None  # for the backward (keep: a gradient is wanted): x_t = S_{t-1}^T a_t, checkpoints
        if keep:
            xs, ckpt = torch.empty_like(v), v.new_empty(bsz, h, lib.dr_chunks(length, kdim, vdim), kdim, vdim)
        tensors = (q, k, v, a, b, w, initial_state, o, ckpt, xs, state)
        cpu_kernels.call("delta_rule", f"dr_forward_{suffix}", *tensors, bsz, h, length, kdim, vdim, mode, who="delta rule")
        ctx.save_for_backward(q, k, v, a, b, w, ckpt, xs)
        ctx.mode, ctx.suffix, ctx.has_initial = mode, suffix, initial_state is not None
        return o, state

    @staticmethod
    def backward(ctx, go, gs):
        q, k, v, a, b, w, ckpt, xs = ctx.saved_tensors
        bsz, length, h, kdim = q.shape
        go = torch.zeros_like(v) if go is None else go.contiguous()
        gs = None if gs is None else gs.contiguous()
        dq, dk, dv, da, db = (torch.empty_like(t) for t in (q, k, v, a, b))
        dw = None if w is None else torch.empty_like(w)
        ds0 = v.new_empty(bsz, h, kdim, v.shape[-1]) if ctx.has_initial and ctx.needs_input_grad[6] else None
        tensors = (q, k, v, a, b, w, ckpt, xs, go, gs, dq, dk, dv, da, db, dw, ds0)
        sizes = (bsz, h, length, kdim, v.shape[-1], ctx.mode)
        cpu_kernels.call("delta_rule", f"dr_backward_{ctx.suffix}", *tensors, *sizes, who="delta rule")
        return dq, dk, dv, da, db, dw, ds0, None


def compiled_available(*tensors: Tensor) -> bool:
    """Whether the C kernel can run on these tensors: fp32 or fp64 alike, on a CPU, outside autocast, built."""
    dtype = tensors[0].dtype
    return (
        dtype in (torch.float32, torch.float64)
        and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
        and not torch.is_autocast_enabled("cpu")
        and cpu_kernels.load("delta_rule") is not None
    )


def _wants_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will ask for a backward: only then do the kernels keep checkpoints for it."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _time_major(t: Tensor) -> Tensor:
    """(B, H, L, ...) -> contiguous (B, L, H, ...): free for the heads of a projection, which are that already."""
    return t.transpose(1, 2).contiguous()


def compiled_dplr(
    q: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, log_w: Tensor, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`chunked_dplr`'s outputs `(B, H, L, V)` (a view of time-major memory) and final state by the C kernel
    (check `compiled_available` first)."""
    initial = None if initial_state is None else initial_state.contiguous()
    inputs = [_time_major(t) for t in (q, k, v, a, b, log_w.exp())]
    o, state = _CompiledDPLR.apply(*inputs, initial, _wants_grad(*inputs, initial))
    return o.transpose(1, 2), state


class _CompiledDelta(torch.autograd.Function):
    """The (gated) delta rule by `csrc/delta_rule.c`, time-major: q, k `(B, L, H, K)`, v `(B, L, H, V)`, beta and
    alpha `(B, L, H)` (alpha None: no decay), contiguous, one dtype; initial state `(B, H, K, V)` or None."""

    @staticmethod
    def forward(ctx, q, k, v, beta, alpha, initial_state, keep):
        bsz, length, h, kdim = q.shape
        vdim = v.shape[-1]
        lib = cpu_kernels.load("delta_rule")
        suffix = "f32" if q.dtype == torch.float32 else "f64"
        o, state = torch.empty_like(v), v.new_empty(bsz, h, kdim, vdim)
        us = xs = ckpt = None  # for the backward (keep: a gradient is wanted): u_t, x_t, checkpoints
        if keep:
            us, xs = torch.empty_like(v), torch.empty_like(v)
            ckpt = v.new_empty(bsz, h, lib.dr_chunks(length, kdim, vdim), kdim, vdim)
        tensors = (q, k, v, beta, alpha, initial_state, o, ckpt, us, xs, state)
        cpu_kernels.call("delta_rule", f"dl_forward_{suffix}", *tensors, bsz, h, length, kdim, vdim, who="delta rule")
        ctx.save_for_backward(q, k, v, beta, alpha, ckpt, us, xs)
        ctx.suffix, ctx.has_initial = suffix, initial_state is not None
        return o, state

    @staticmethod
    def backward(ctx, go, gs):
        q, k, v, beta, alpha, ckpt, us, xs = ctx.saved_tensors
        bsz, length, h, kdim = q.shape
        go = torch.zeros_like(v) if go is None else go.contiguous()
        gs = None if gs is None else gs.contiguous()
        dq, dv, dbeta = torch.empty_like(q), torch.empty_like(v), torch.empty_like(beta)
        dk = torch.empty_like(k)
        dalpha = None if alpha is None else torch.empty_like(alpha)
        ds0 = v.new_empty(bsz, h, kdim, v.shape[-1]) if ctx.has_initial and ctx.needs_input_grad[5] else None
        tensors = (q, k, v, beta, alpha, ckpt, us, xs, go, gs, dq, dk, dv, dbeta, dalpha, ds0)
        cpu_kernels.call("delta_rule", f"dl_backward_{ctx.suffix}", *tensors, bsz, h, length, kdim, v.shape[-1], who="delta rule")
        return dq, dk, dv, dbeta, dalpha, ds0, None


def compiled_delta_rule(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_alpha: Tensor | None = None, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`chunked_delta_rule`'s outputs `(B, H, L, V)` (a view of time-major memory) and final state by the C
    kernel (check `compiled_available` first)."""
    alpha = None if log_alpha is None else _time_major(log_alpha.exp())
    initial = None if initial_state is None else initial_state.contiguous()
    inputs = [_time_major(t) for t in (q, k, v, beta)]
    o, state = _CompiledDelta.apply(*inputs, alpha, initial, _wants_grad(*inputs, alpha, initial))
    return o.transpose(1, 2), state


class _CompiledNorm(torch.autograd.Function):
    """RMSNorm(x) * w (* SiLU(z)) over the last dim by `csrc/delta_rule.c`; x, z contiguous, one dtype."""

    @staticmethod
    def forward(ctx, x, weight, z, eps):
        lib = cpu_kernels.load("delta_rule")
        suffix = "f32" if x.dtype == torch.float32 else "f64"
        rows, vdim = x.numel() // x.shape[-1], x.shape[-1]
        y, r = torch.empty_like(x), x.new_empty(rows)
        sg = None if z is None else torch.sigmoid(z)  # PyTorch's exp is vectorized; the kernel takes it
        pointers = map(cpu_kernels.pointer, (x, weight, z, sg, y, r))
        getattr(lib, f"norm_forward_{suffix}")(*pointers, rows, vdim, ctypes.c_double(eps))
        ctx.save_for_backward(x, weight, z, sg, r)
        ctx.suffix = suffix
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight, z, sg, r = ctx.saved_tensors
        gy = gy.contiguous()
        gx, gw = torch.empty_like(x), torch.zeros_like(weight)
        gz = None if z is None else torch.empty_like(z)
        lib = cpu_kernels.load("delta_rule")
        pointers = map(cpu_kernels.pointer, (x, weight, z, sg, r, gy, gx, gw, gz))
        getattr(lib, f"norm_backward_{ctx.suffix}")(*pointers, r.numel(), x.shape[-1])
        return gx, gw, gz, None


def rms_norm_gate(x: Tensor, norm: torch.nn.RMSNorm, z: Tensor | None = None, compiled: bool = True) -> Tensor:
    """norm(x) (* SiLU(z)): the readout of DeltaNet (no z) and Gated DeltaNet; by the C kernel where it runs (one
    pass each way instead of a dozen elementwise ops), else PyTorch's."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    weight = norm.weight
    if compiled and compiled_available(x, weight, *(() if z is None else (z,))):
        return _CompiledNorm.apply(x.contiguous(), weight.contiguous(), None if z is None else z.contiguous(), eps)
    y = norm(x)
    return y if z is None else y * F.silu(z)


class _CompiledL2Norm(torch.autograd.Function):
    """`l2_normalize` by `csrc/delta_rule.c`: x `(..., G, K)`, read in place where its rows of K lie G to a token
    (a slice of a projection's output); the output and the gradient are contiguous."""

    @staticmethod
    def forward(ctx, x, eps, scaled, scale):
        groups, kdim = x.shape[-2:]
        if x.stride(-1) != 1 or x.stride(-2) != kdim:
            x = x.contiguous()
        try:
            rows = x.view(-1, groups, kdim)
        except RuntimeError:  # leading dims that do not merge into one stride
            rows = x.contiguous().view(-1, groups, kdim)
        lib = cpu_kernels.load("delta_rule")
        suffix = "f32" if x.dtype == torch.float32 else "f64"
        y, r = x.new_empty(x.shape), x.new_empty(rows.shape[0] * groups)
        args = (rows.shape[0], groups, ctypes.c_long(rows.stride(0)), kdim)
        getattr(lib, f"l2n_forward_{suffix}")(
            *map(cpu_kernels.pointer, (rows, y, r)), *args, ctypes.c_double(eps), scaled, ctypes.c_double(scale)
        )
        ctx.save_for_backward(rows, r)
        ctx.args, ctx.suffix, ctx.scaled, ctx.scale = args, suffix, scaled, scale
        return y

    @staticmethod
    def backward(ctx, gy):
        rows, r = ctx.saved_tensors
        gy = gy.contiguous()
        gx = torch.empty_like(gy)
        lib = cpu_kernels.load("delta_rule")
        pointers = map(cpu_kernels.pointer, (rows, r, gy, gx))
        getattr(lib, f"l2n_backward_{ctx.suffix}")(*pointers, *ctx.args, ctx.scaled, ctypes.c_double(ctx.scale))
        return gx, None, None, None
