"""The operator vocabulary every mixer speaks: what `operator(x)` returns.

- `MixerOperator(matrix, inputs, outputs)`: the causal operator per channel, the channel inputs it
  acts on and the outputs the mixer computed with its own path (`outputs == matrix @ inputs`);
- `Semiseparable(q, k, log_decay)`: the factored form of a diagonal linear recurrence, which the
  ESS library (benchmarks.ess) measures without materializing it.

These live beside the mixers, which build them; benchmarks/ only measures them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from architectures.scan import linear_scan


class MixerOperator(NamedTuple):
    matrix: object  # Tensor (B, C, L, L) or Semiseparable
    inputs: Tensor  # (B, C, L)
    outputs: Tensor  # (B, C, L)


def _high_precision(t: Tensor) -> Tensor:
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


class Semiseparable:
    """The operator T[t, s] = sum_n q[t, n] k[s, n] exp(sum_{m=s+1..t} log_decay[m, n]), s <= t.

    `q`, `k`: `(..., L, N)`; `log_decay`: `(..., L, N)` with entries <= 0, or None
    for no decay (linear attention). Complex tensors are allowed (diagonal complex
    recurrences such as the LRU's; then the real part of log_decay is <= 0). Covers linear attention, gated and
    RetNet-style decayed linear attention, Mamba's S6 per channel
    (q = C, k = dt * B, log_decay = dt * A) and Mamba-2's SSD.
    """

    def __init__(self, q: Tensor, k: Tensor, log_decay: Tensor | None = None):
        if not (isinstance(q, Tensor) and isinstance(k, Tensor)):
            raise ValueError("Semiseparable: q and k must be tensors of shape (..., L, N)")
        if q.dim() < 2 or q.shape != k.shape:
            raise ValueError(
                f"Semiseparable: q and k must both have shape (..., L, N); got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        if log_decay is not None:
            if log_decay.shape != q.shape:
                raise ValueError(
                    f"Semiseparable: log_decay must have the shape of q, {tuple(q.shape)}; got {tuple(log_decay.shape)}"
                )
            real = log_decay.real if log_decay.is_complex() else log_decay
            if bool((real > 0).any()):
                raise ValueError(
                    "Semiseparable: log_decay must be <= 0 everywhere (a decay factor |exp(log_decay)| <= 1); "
                    f"its largest (real part) is {real.max().item():.3g}"
                )
        self.q, self.k, self.log_decay = q, k, log_decay

    @property
    def shape(self) -> torch.Size:
        length = self.q.shape[-2]
        return torch.Size((*self.q.shape[:-2], length, length))

    @property
    def state_dim(self) -> int:
        return self.q.shape[-1]

    def _decay(self) -> Tensor:
        if self.log_decay is None:
            return torch.ones_like(self.k)
        return self.log_decay.exp()

    def dense(self) -> Tensor:
        """The `(..., L, L)` matrix. Built in float64 one state dimension at a time (memory O(L^2))."""
        q, k = _high_precision(self.q), _high_precision(self.k)
        length = q.shape[-2]
        causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        if self.log_decay is None:
            out = q @ k.transpose(-1, -2)
        else:
            # cumulative log decays; c[t] - c[s] = sum_{m=s+1..t} log_decay[m]
            c = _high_precision(self.log_decay).cumsum(-2)
            out = torch.zeros(self.shape, dtype=torch.promote_types(q.dtype, c.dtype), device=q.device)
            for n in range(q.shape[-1]):
                gap = (c[..., :, None, n] - c[..., None, :, n]) * causal  # only s <= t is kept below
                out = out + q[..., :, None, n] * k[..., None, :, n] * gap.exp() * causal
        return out.masked_fill(~causal, 0.0).to(self.q.dtype)

    def apply(self, u: Tensor) -> Tensor:
        """T @ u for u of shape `(..., L)`, by the recurrence h_t = decay_t h_{t-1} + k_t u_t, y_t = q_t . h_t."""
        if u.shape != self.q.shape[:-1]:
            raise ValueError(f"Semiseparable.apply: input must have shape {tuple(self.q.shape[:-1])}; got {tuple(u.shape)}")
        states = linear_scan(self._decay(), self.k * u.unsqueeze(-1))
        return (self.q * states).sum(-1)

    def __matmul__(self, u: Tensor) -> Tensor:
        """`T @ u` with u `(..., L)` or `(..., L, 1)`, like a dense matrix-vector product."""
        if u.dim() == self.q.dim() and u.shape[-1] == 1:
            return self.apply(u.squeeze(-1)).unsqueeze(-1)
        return self.apply(u)

    def to(self, *args, **kwargs) -> Semiseparable:
        ld = None if self.log_decay is None else self.log_decay.to(*args, **kwargs)
        return Semiseparable(self.q.to(*args, **kwargs), self.k.to(*args, **kwargs), ld)

    def __getitem__(self, index) -> Semiseparable:
        """Index the leading (batch/channel) dimensions."""
        ld = None if self.log_decay is None else self.log_decay[index]
        return Semiseparable(self.q[index], self.k[index], ld)
