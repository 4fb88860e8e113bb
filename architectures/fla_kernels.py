"""flash-linear-attention's chunked GLA kernel as the fast path of the gated-linear family.

Used only on CUDA, when `fla` imports and a first call on a small input matches
`chunked_gla` (architectures.kernels.use_fast); otherwise the reference path runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from architectures.kernels import optional_import, use_fast
from architectures.linear_recurrence import chunked_gla


def fla_gla(q: Tensor, k: Tensor, v: Tensor, log_a: Tensor | None) -> Tensor:
    """fla's chunk_gla on (B, H, L, .) tensors, unscaled, decays broadcast to the key dim."""
    chunk_gla = optional_import("fla.ops.gla").chunk_gla
    g = torch.zeros_like(k) if log_a is None else log_a.expand_as(k)
    args = [t.transpose(1, 2).contiguous() for t in (q, k, v, g)]  # fla's (B, T, H, D) layout
    o, _ = chunk_gla(*args, scale=1.0)
    return o.transpose(1, 2).to(v.dtype)


def _probe(device: torch.device) -> bool:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 64, 16, generator=g), torch.randn(2, 2, 64, 16, generator=g)
    v, log_a = torch.randn(2, 2, 64, 16, generator=g), -torch.rand(2, 2, 64, 16, generator=g)
    ref, _ = chunked_gla(q, k, v, log_a)
    out = fla_gla(*(t.to(device) for t in (q, k, v, log_a)))
    return torch.allclose(out.float().cpu(), ref, atol=1e-2, rtol=1e-2)


class FlaChunked:
    """Mixin: route `_chunked` through fla's kernel when it is available on the tensors' device."""

    def _chunked(self, q, k, v, log_a):
        if use_fast("fla/chunk_gla", self.kernel_choice, q.device, _probe):
            self.kernel = "fla-chunk_gla"
            return fla_gla(q, k, v, log_a), None
        self.kernel = "reference"
        return chunked_gla(q, k, v, log_a, self.chunk_size, with_state=False)
