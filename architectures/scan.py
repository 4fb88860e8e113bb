"""First-order linear recurrences, shared by the mixers and the ESS library.

h_t = a_t * h_{t-1} + b_t along the sequence axis. The scan runs time-major: the
sequence axis first, so each step reads and writes one contiguous slice, and the
work is one pass over the data (a parallel prefix scan makes ~9 passes, and on a
CPU these recurrences are bound by memory traffic, not arithmetic). Sequences
longer than CHUNK steps are cut into chunks scanned side by side (one Python
step per position of a chunk, not per position of the sequence), then the state
entering each chunk is carried across chunks and added, scaled by the decay
products. Backward: the adjoint recurrence lambda_t = g_t + conj(a_{t+1})
lambda_{t+1}, the same scan run from the end, so autograd stores only a and h.
Every factor stays a product of decays (|a| <= 1 in our mixers), so unlike a
cumsum of logs it can neither overflow nor cancel. Works for real and complex
tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 64  # steps scanned one after another; chunks of this length run side by side


def _scan_time_major(a: Tensor, b: Tensor, reverse: bool = False) -> Tensor:
    """h_t = a_t h_{t-1} + b_t over dim 0 (`reverse`: h_t = a_t h_{t+1} + b_t), h outside = 0.

    `a` and `b`: contiguous `(L, ...)` of one shape; no autograd."""
    length, rest = b.shape[0], b.shape[1:]
    q = min(CHUNK, length)
    n = -(-length // q)
    if n * q != length:  # zero steps after the end: nothing earlier changes, and r_L = 0 backwards
        pad = torch.zeros((n * q - length, *rest), dtype=b.dtype, device=b.device)
        a, b = torch.cat([a, pad]), torch.cat([b, pad])
    a, b = a.view(n, q, *rest), b.view(n, q, *rest)
    steps = list(range(q - 1, -1, -1)) if reverse else list(range(q))
    h = torch.empty_like(b)
    h[:, steps[0]] = b[:, steps[0]]
    for prev, t in zip(steps, steps[1:], strict=False):
        torch.addcmul(b[:, t], a[:, t], h[:, prev], out=h[:, t])
    if n > 1:
        # decay from each chunk's start (end, backwards) to t, then the state carried into each chunk
        decay = torch.empty_like(a)
        decay[:, steps[0]] = a[:, steps[0]]
        for prev, t in zip(steps, steps[1:], strict=False):
            torch.mul(a[:, t], decay[:, prev], out=decay[:, t])
        chunks = list(range(n - 1, -1, -1)) if reverse else list(range(n))
        carry = torch.zeros((n, *rest), dtype=b.dtype, device=b.device)
        for prev, c in zip(chunks, chunks[1:], strict=False):
            torch.addcmul(h[prev, steps[-1]], decay[prev, steps[-1]], carry[prev], out=carry[c])
        h.addcmul_(decay, carry.unsqueeze(1))
    return h.view(n * q, *rest)[:length]


class _TimeMajorScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        h = _scan_time_major(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, h = ctx.saved_tensors
        # adjoint: lambda_t = grad_t + conj(a_{t+1}) lambda_{t+1} = dL/db_t; dL/da_t = lambda_t conj(h_{t-1})
        a_next = torch.empty_like(a)
        a_next[:-1] = a[1:].conj()
        a_next[-1:] = 0
        lam = _scan_time_major(a_next, grad.contiguous(), reverse=True)
        grad_a = torch.empty_like(lam)
        torch.mul(lam[1:], h[:-1].conj(), out=grad_a[1:])
        grad_a[:1] = 0  # h_{-1} = 0 (an initial state is folded into b_0)
        return grad_a, lam


def _common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = torch.broadcast_tensors(a, b)
    if a.dtype != b.dtype:
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
    return a, b


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states h_t of h_t = a_t * h_{t-1} + b_t, with h_{-1} = h0 (default 0).

    `a` and `b` are broadcast-compatible `(..., L, N)` tensors (real or complex);
    `h0` is `(..., N)`. Returns `(..., L, N)`.
    """
    a, b = _common(a, b)
    if h0 is not None:
        b = torch.cat([b[..., :1, :] + a[..., :1, :] * h0.unsqueeze(-2), b[..., 1:, :]], dim=-2)
    h = _TimeMajorScan.apply(a.movedim(-2, 0).contiguous(), b.movedim(-2, 0).contiguous())
    return h.movedim(0, -2)
