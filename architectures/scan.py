"""Parallel first-order linear recurrences, shared by the mixers and the ESS library.

h_t = a_t * h_{t-1} + b_t along the sequence axis (dim -2). Forward: a
work-efficient parallel prefix scan, log2(L) vectorised levels instead of a
Python loop over time; every factor stays a product of decays (|a| <= 1 in our
mixers), so unlike a cumsum of logs it can neither overflow nor cancel. Backward: the
adjoint recurrence lambda_t = g_t + conj(a_{t+1}) lambda_{t+1} is the same scan
run backwards (a suffix scan: no flips), so autograd stores only a and h instead
of every scan level. Works for real and complex tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _prefix_scan(a: Tensor, b: Tensor) -> Tensor:
    """Work-efficient (Blelloch-style) scan without autograd; a and b of the same shape (..., L, N).

    Pairs of steps are fused into one (a2 a1, a2 b1 + b2), the half-length
    sequence is scanned recursively, and the states in between are filled in:
    O(L) work in log2(L) vectorised levels.
    """
    length = b.shape[-2]
    if length == 1:
        return b.clone()
    if length % 2:  # pad one neutral step (a = 1, b = 0) at the end; causal, so nothing earlier changes
        a = torch.cat([a, torch.ones_like(a[..., :1, :])], dim=-2)
        b = torch.cat([b, torch.zeros_like(b[..., :1, :])], dim=-2)
    a_even, a_odd = a[..., 0::2, :], a[..., 1::2, :]
    b_even, b_odd = b[..., 0::2, :], b[..., 1::2, :]
    h_odd = _prefix_scan(a_odd * a_even, a_odd * b_even + b_odd)  # states after each pair
    h_even = b_even.clone()
    h_even[..., 1:, :] += a_even[..., 1:, :] * h_odd[..., :-1, :]
    return torch.stack([h_even, h_odd], dim=-2).flatten(-3, -2)[..., :length, :]


def _suffix_scan(c: Tensor, g: Tensor) -> Tensor:
    """r_t = g_t + c_t * r_{t+1} with r_L = 0, the same work-efficient scheme run from the end:
    pairs (2i, 2i+1) fuse into (c_2i c_2i+1, g_2i + c_2i g_2i+1), the half-length suffix scan
    gives r at the even steps, and each odd step reads the even step after it."""
    length = g.shape[-2]
    if length == 1:
        return g.clone()
    if length % 2:  # a neutral step (g = 0) after the end: r_L = 0 whatever c_{L-1}
        c = torch.cat([c, torch.zeros_like(c[..., :1, :])], dim=-2)
        g = torch.cat([g, torch.zeros_like(g[..., :1, :])], dim=-2)
    c_even, c_odd = c[..., 0::2, :], c[..., 1::2, :]
    g_even, g_odd = g[..., 0::2, :], g[..., 1::2, :]
    r_even = _suffix_scan(c_even * c_odd, g_even + c_even * g_odd)  # r at the start of each pair
    r_odd = g_odd.clone()
    r_odd[..., :-1, :] += c_odd[..., :-1, :] * r_even[..., 1:, :]
    return torch.stack([r_even, r_odd], dim=-2).flatten(-3, -2)[..., :length, :]


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        h = _prefix_scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, h = ctx.saved_tensors
        # adjoint: lambda_t = grad_t + conj(a_{t+1}) lambda_{t+1} = dL/db_t; dL/da_t = lambda_t conj(h_{t-1})
        a_next = torch.empty_like(a)
        a_next[..., :-1, :] = a[..., 1:, :].conj()
        a_next[..., -1:, :] = 0
        lam = _suffix_scan(a_next, grad.contiguous())
        grad_a = torch.empty_like(lam)
        torch.mul(lam[..., 1:, :], h[..., :-1, :].conj(), out=grad_a[..., 1:, :])
        grad_a[..., :1, :] = 0  # h_{-1} = 0 (an initial state is folded into b_0)
        return grad_a, lam


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states h_t of h_t = a_t * h_{t-1} + b_t, with h_{-1} = h0 (default 0).

    `a` and `b` are broadcast-compatible `(..., L, N)` tensors (real or complex);
    `h0` is `(..., N)`. Returns `(..., L, N)`.
    """
    a, b = torch.broadcast_tensors(a, b)
    if a.dtype != b.dtype:
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    if h0 is not None:
        b = torch.cat([b[..., :1, :] + a[..., :1, :] * h0.unsqueeze(-2), b[..., 1:, :]], dim=-2)
    return _LinearScan.apply(a.contiguous(), b.contiguous())
