"""Parallel first-order linear recurrences, shared by the mixers and the ESS library.

h_t = a_t * h_{t-1} + b_t along the sequence axis (dim -2), computed with a
Hillis–Steele prefix scan: log2(L) vectorised steps instead of a Python loop
over time. Every factor stays a product of decays in [0, 1] (or of unit
modulus), so unlike a cumsum of logs it can neither overflow nor cancel.
"""

from __future__ import annotations

import torch
from torch import Tensor


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states h_t of h_t = a_t * h_{t-1} + b_t, with h_{-1} = h0 (default 0).

    `a` and `b` are broadcast-compatible `(..., L, N)` tensors (real or complex);
    `h0` is `(..., N)`. Returns `(..., L, N)`.
    """
    a, b = torch.broadcast_tensors(a, b)
    if h0 is not None:
        b = torch.cat([b[..., :1, :] + a[..., :1, :] * h0.unsqueeze(-2), b[..., 1:, :]], dim=-2)
    length = b.shape[-2]
    offset = 1
    while offset < length:
        # combine each element with the partial result `offset` steps earlier
        b = torch.cat([b[..., :offset, :], b[..., offset:, :] + a[..., offset:, :] * b[..., :-offset, :]], dim=-2)
        a = torch.cat([a[..., :offset, :], a[..., offset:, :] * a[..., :-offset, :]], dim=-2)
        offset *= 2
    return b
