"""Out-of-tree mixers used by the tests (importable as `nan_mixer:NaNMixer`)."""

import torch
from torch import nn


class NaNMixer(nn.Module):
    """Produces NaN outputs: its runs must be recorded as failed without stopping a sweep."""

    def __init__(self, d_model: int, **_):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x) * torch.tensor(float("nan"))
