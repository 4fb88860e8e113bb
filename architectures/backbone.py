"""The language model every mixer is trained in: Zoology's two-layer backbone.

Token embedding -> n_layers x [x + mixer(norm(x)); x + MLP(norm(x))] -> norm -> LM head.
(Arora et al. 2023 train two such blocks, a sequence mixer and an MLP "state
mixer" each, on MQAR.) Positional information comes from the mixers
themselves (rotary attention, convolutions, recurrences).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from architectures import registry
from architectures.base import require_positive, with_length


class Block(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = mixer
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """`keep` (bool, x's leading shape): return only those positions, `(n, d_model)`; the MLP
        acts per position, so the others' MLP is skipped (their values are the same either way)."""
        x = x + self.mixer(self.norm1(x))
        if keep is not None:
            x = x[keep]
        return x + self.mlp(self.norm2(x))


class LanguageModel(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        mixer: str,
        d_model: int = 64,
        n_layers: int = 2,
        mlp_ratio: int = 4,
        mixer_config: dict | None = None,
        seq_len: int | None = None,
    ):
        super().__init__()
        require_positive("model", vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mlp_ratio=mlp_ratio)
        self.mixer_name = mixer
        mixer_config = dict(mixer_config or {})
        if seq_len is not None:
            mixer_config = with_length(registry.resolve(mixer), mixer_config, seq_len)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, registry.build(mixer, d_model=d_model, **mixer_config), mlp_ratio) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    @property
    def mixers(self) -> list[nn.Module]:
        return [b.mixer for b in self.blocks]

    def forward(self, tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        """Logits `(B, L, vocab)`, or `(n, vocab)` at the positions where `keep` (bool, `(B, L)`) is
        true: training scores few positions (MQAR's queries), and after the last mixer every layer
        acts per position, so the last MLP and the head run only where a loss is taken."""
        x = self.embed(tokens)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.head(self.norm(self.blocks[-1](x, keep)))


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Fixed sin/cos position embeddings `(length, dim)` (Vaswani et al. 2017)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(pos * freqs)
    out[:, 1::2] = torch.cos(pos * freqs[: dim // 2])
    return out


class AutoEncoder(LanguageModel):
    """MAD's autoencoder backbone for the compression task: the mixer blocks encode the sequence,
    the state at the last position (the compression token) is the code, and a non-expanding MLP
    decoder rebuilds token t from code + sinusoidal position embedding t."""

    def __init__(self, vocab_size: int, mixer: str, d_model: int = 64, **kwargs):
        super().__init__(vocab_size, mixer, d_model=d_model, **kwargs)
        self.decoder = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model),
            nn.GELU(),
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model),
            nn.GELU(),
        )

    def forward(self, tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        code = x[:, -1:]  # (B, 1, D)
        positions = sinusoidal_positions(tokens.shape[1], x.shape[-1]).to(x.device, x.dtype)
        decoded = code + positions
        return self.head(self.norm(self.decoder(decoded if keep is None else decoded[keep])))


BACKBONES = {"language_model": LanguageModel, "autoencoder": AutoEncoder}
