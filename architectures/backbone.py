"""The language models a mixer is trained in, one per reference suite (`model.backbone`).

- `zoology`: Zoology's MQAR model (Arora et al. 2023; `zoology/model.py`, `zoology/mixers/hybrid.py`,
  `zoology/experiments/models_repo.py`). `n_layers` (2) pre-norm blocks with no MLP: Zoology's
  TransformerBlock with `state_mixer = Identity`, i.e. x + mixer(norm1 x), then x + norm2 x. A mixer
  without a short convolution of its own (`short_conv`, declared by the mixer), or that Zoology wraps
  anyway (`zoology_hybrid`: DeltaNet, Gated DeltaNet), is wrapped as
  `Hybrid([BaseConv(kernel_size=3), mixer])`, which builds `configs[layer_idx % 2]`: layer 0 is a
  BaseConv, layer 1 the mixer. Mamba and Mamba-2 fill every layer, in Zoology's MambaBlock
  (x + mixer(norm x), no state mixer: `zoology_block = "mamba"`), Hyena every layer in the
  TransformerBlock. The LM head is tied to the token embedding and both start at normal(0, 0.02),
  as is the BaseConv's projection (`zoology/model.py: _init_weights`). Unlike Zoology, which
  re-initialises every Linear of the model at normal(0, 0.02) (zeroing, e.g., Mamba's dt bias),
  the mixers keep their own papers' initialisation, so a mixer is the same module in every backbone.
- `mad`: MAD's language model (Poli et al. 2024; `athms/mad-lab: mad/model/language_model.py`):
  `n_layers` blocks of x + mixer(norm x), x + MLP(norm x) (MAD stacks mixer and MLP as separate
  pre-norm residual layers, the same thing), MLP of width `mlp_ratio` x d_model with GELU, an untied
  head. MAD normalises with RMSNorm, biases its head and zeroes Linear biases at init; this model
  uses LayerNorm, no head bias and PyTorch's default init (its published MAD records were trained so).
- `conv_mlp`: between the two, for the backbone ablation: `mad` with a BaseConv layer
  (x + BaseConv(norm x)) ahead of every mixer that has no short convolution of its own.

Positional information comes from the mixers themselves (rotary attention, convolutions,
recurrences). `mixers` are the layers of the mixer under test (what ESS, TSS and the headline
report); `convs` are the BaseConv layers; every layer's decoding state is the model's cache.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from architectures import registry
from architectures.base import require_positive, with_length
from architectures.base_conv import BaseConv

NAMES = ("zoology", "mad", "conv_mlp")
STATE_MIXERS = ("mlp", "identity", "none")


class Block(nn.Module):
    """x + mixer(norm1 x), then the state mixer: x + MLP(norm2 x) (`mlp`, MAD), x + norm2 x
    (`identity`, Zoology's TransformerBlock with the Identity state mixer) or nothing (`none`)."""

    def __init__(self, d_model: int, mixer: nn.Module, state_mixer: str = "mlp", mlp_ratio: int = 4):
        super().__init__()
        if state_mixer not in STATE_MIXERS:
            raise ValueError(f"model: invalid state mixer {state_mixer!r}; one of {', '.join(STATE_MIXERS)}")
        self.state_mixer = state_mixer
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model) if state_mixer != "none" else None
        if state_mixer == "mlp":
            self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model))
        else:
            self.mlp = nn.Identity()

    def _state_mix(self, x: Tensor) -> Tensor:
        return x if self.norm2 is None else x + self.mlp(self.norm2(x))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """`keep` (bool, x's leading shape): return only those positions, `(n, d_model)`; the state
        mixer acts per position, so the others' is skipped (their values are the same either way)."""
        x = x + self.mixer(self.norm1(x))
        if keep is not None:
            x = x[keep]
        return self._state_mix(x)

    def step(self, x_t: Tensor, state: dict) -> tuple[Tensor, dict]:
        y, state = self.mixer.step(self.norm1(x_t), state)
        return self._state_mix(x_t + y), state


def layout(backbone: str, factory, n_layers: int) -> list[tuple[str, str]]:
    """The model's layers as (what, state mixer): what is "mixer" or "base_conv"."""
    if backbone not in NAMES:
        raise ValueError(f"model.backbone: unknown backbone {backbone!r}; one of {', '.join(NAMES)}")
    own_conv = bool(getattr(factory, "short_conv", False))
    if backbone == "mad" or (backbone == "conv_mlp" and own_conv):
        return [("mixer", "mlp")] * n_layers
    if backbone == "conv_mlp":
        return [("base_conv", "none"), ("mixer", "mlp")] * n_layers
    if own_conv and not getattr(factory, "zoology_hybrid", False):  # Zoology builds these alone in every layer
        block = getattr(factory, "zoology_block", "transformer")
        if block not in ("transformer", "mamba"):
            raise ValueError(f"model: the mixer's zoology_block must be 'transformer' or 'mamba'; got {block!r}")
        return [("mixer", "identity" if block == "transformer" else "none")] * n_layers
    # Hybrid([BaseConv, mixer]): configs[layer_idx % 2]
    return [(("base_conv", "mixer")[i % 2], "identity") for i in range(n_layers)]


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
        backbone: str = "mad",
        conv_kernel: int = 3,
    ):
        super().__init__()
        require_positive(
            "model", vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mlp_ratio=mlp_ratio, conv_kernel=conv_kernel
        )
        self.mixer_name, self.backbone = mixer, backbone
        factory = registry.resolve(mixer)
        mixer_config = dict(mixer_config or {})
        if seq_len is not None:
            mixer_config = with_length(factory, mixer_config, seq_len)
        self.layout = layout(backbone, factory, n_layers)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            Block(
                d_model,
                registry.build(mixer, d_model=d_model, **mixer_config) if what == "mixer" else BaseConv(d_model, conv_kernel),
                state_mixer,
                mlp_ratio,
            )
            for what, state_mixer in self.layout
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if backbone == "zoology":
            for module in [self.embed, *self.convs]:  # zoology/model.py: _init_weights, normal(0, 0.02)
                for name, p in module.named_parameters():
                    if name.endswith("weight") and (module is self.embed or name.startswith("projection")):
                        nn.init.normal_(p, std=0.02)
                    elif name.startswith("projection") and name.endswith("bias"):
                        nn.init.zeros_(p)
            self.head.weight = self.embed.weight  # zoology/model.py: lm_head tied to the word embeddings

    @property
    def mixers(self) -> list[nn.Module]:
        """The layers of the mixer under test (not the BaseConv layers a backbone adds)."""
        return [b.mixer for b, (what, _) in zip(self.blocks, self.layout, strict=True) if what == "mixer"]

    @property
    def convs(self) -> list[nn.Module]:
        """The BaseConv layers the backbone put ahead of the mixer (none where it has its own convolution)."""
        return [b.mixer for b, (what, _) in zip(self.blocks, self.layout, strict=True) if what == "base_conv"]

    def forward(self, tokens: Tensor, keep: Tensor | None = None) -> Tensor:
        """Logits `(B, L, vocab)`, or `(n, vocab)` at the positions where `keep` (bool, `(B, L)`) is
        true: training scores few positions (MQAR's queries), and after the last mixer every layer
        acts per position, so the last state mixer and the head run only where a loss is taken."""
        x = self.embed(tokens)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.head(self.norm(self.blocks[-1](x, keep)))

    def init_state(self, batch_size: int) -> list[dict]:
        """Every layer's decoding state (the model's inference cache)."""
        return [b.mixer.init_state(batch_size) for b in self.blocks]

    @torch.no_grad()
    def step(self, tokens_t: Tensor, state: list[dict]) -> tuple[Tensor, list[dict]]:
        """Logits `(B, vocab)` of one token per sequence `(B,)`, and the new state."""
        x = self.embed(tokens_t)
        new = []
        for block, s in zip(self.blocks, state, strict=True):
            x, s = block.step(x, s)
            new.append(s)
        return self.head(self.norm(x)), new


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """Fixed sin/cos position embeddings `(length, dim)` (Vaswani et al. 2017)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(pos * freqs)
    out[:, 1::2] = torch.cos(pos * freqs[: dim // 2])
    return out


class AutoEncoder(LanguageModel):
    """MAD's autoencoder for the compression task: the mixer blocks (any backbone's) encode the sequence,
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


MODELS = {"language_model": LanguageModel, "autoencoder": AutoEncoder}  # what a task trains: tasks.base.Task.model
