"""Parallel first-order linear recurrences, shared by the mixers and the ESS library.

h_t = a_t * h_{t-1} + b_t along the sequence axis (dim -2). Forward: a
work-efficient parallel prefix scan, log2(L) vectorised levels instead of a
Python loop over time; every factor stays a product of decays (|a| <= 1 in our
mixers), so unlike a cumsum of logs it can neither overflow nor cancel. Backward: the
adjoint recurrence lambda_t = g_t + conj(a_{t+1}) lambda_{t+1} is the same scan
run in reverse, so autograd stores only a and h instead of every scan level.
Works for real and complex tensors.
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


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        h = _prefix_scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, h = ctx.saved_tensors
        zero = torch.zeros_like(a[..., :1, :])
        a_next = torch.cat([a[..., 1:, :], zero], dim=-2).conj()
        lam = _prefix_scan(a_next.flip(-2), grad.flip(-2)).flip(-2)  # dL/db_t
        h_prev = torch.cat([torch.zeros_like(h[..., :1, :]), h[..., :-1, :]], dim=-2)
        return lam * h_prev.conj(), lam


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
