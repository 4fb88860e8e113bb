"""Out-of-tree mixers used by the tests (importable as `nan_mixer:NaNMixer`)."""

import torch

from architectures.linear_attention import LinearAttention


class NaNMixer(LinearAttention):
    """Passes conformance (checked without gradients) but its outputs become NaN while it trains:
    its runs must be recorded as failed without stopping a sweep."""

    def forward(self, x):
        y = super().forward(x)
        return y * torch.tensor(float("nan")) if torch.is_grad_enabled() and self.training else y


class ShortOutput(LinearAttention):
    """Drops the last position: (B, L - 1, D) out of (B, L, D) in."""

    def forward(self, x):
        return super().forward(x)[:, :-1]


class WideOutput(LinearAttention):
    """Doubles the channels: (B, L, 2 D) out of (B, L, D) in."""

    def forward(self, x):
        y = super().forward(x)
        return torch.cat([y, y], dim=-1)
