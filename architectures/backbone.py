"""The language model every mixer is trained in: Zoology's two-layer backbone.

Token embedding -> n_layers x [x + mixer(norm(x)); x + MLP(norm(x))] -> norm -> LM head.
(Arora et al. 2023 train two such blocks, a sequence mixer and an MLP "state
mixer" each, on MQAR.) Positional information comes from the mixers
themselves (rotary attention, convolutions, recurrences).
"""

from __future__ import annotations

from torch import Tensor, nn

from architectures import registry
from architectures.base import require_positive


class Block(nn.Module):
    def __init__(self, d_model: int, mixer: nn.Module, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mixer = mixer
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm1(x))
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
    ):
        super().__init__()
        require_positive("model", vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mlp_ratio=mlp_ratio)
        self.mixer_name = mixer
        mixer_config = dict(mixer_config or {})
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, registry.build(mixer, d_model=d_model, **mixer_config), mlp_ratio) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    @property
    def mixers(self) -> list[nn.Module]:
        return [b.mixer for b in self.blocks]

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
