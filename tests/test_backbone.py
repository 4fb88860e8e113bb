"""The backbones against their references: Zoology's BaseConv and layer layout, whole-model decoding,
and a user's mixer that declares its own short convolution."""

import pytest
import torch
from torch import nn

from architectures import registry
from architectures.backbone import LanguageModel, layout
from architectures.base_conv import BaseConv
from benchmarks.ess import effective_state_size
from examples.gated_ema import GatedEMA


def _zoology_base_conv(conv: BaseConv, u: torch.Tensor) -> torch.Tensor:
    """y = ShortConv_k(u) * Linear(u) + u written out position by position (zoology/mixers/base_conv.py)."""
    w, b = conv.conv.weight[:, 0], conv.conv.bias  # (D, K), (D,)
    k = w.shape[-1]
    padded = torch.cat([u.new_zeros(u.shape[0], k - 1, u.shape[2]), u], dim=1)  # (B, K - 1 + L, D)
    short = torch.stack([(padded[:, t : t + k] * w.T).sum(1) + b for t in range(u.shape[1])], dim=1)
    return short * (u @ conv.projection.weight.T + conv.projection.bias) + u


def test_base_conv_matches_zoologys_formula():
    conv = BaseConv(8, kernel_size=3).double()
    u = torch.randn(2, 12, 8, dtype=torch.float64)
    assert torch.allclose(conv(u), _zoology_base_conv(conv, u), atol=1e-12)


@pytest.mark.parametrize("kernel_size", [2, 3, 5])
def test_base_conv_ess_is_kernel_minus_one(kernel_size):
    """T[i:, :i] of diag(p) C + I reaches back kernel_size - 1 inputs: rank kernel_size - 1 at every
    interior split for generic taps and gates, never more (the ESS <= TSS bound is tight)."""
    conv = BaseConv(4, kernel_size=kernel_size).double()
    x = torch.randn(3, 20, 4, dtype=torch.float64)
    op = conv.operator(x)
    assert torch.allclose(torch.einsum("bcts,bcs->bct", op.matrix, op.inputs), op.outputs, atol=1e-12)
    ess = effective_state_size(op.matrix, positions=list(range(kernel_size, 20 - kernel_size)))
    assert (ess == kernel_size - 1).all()
    assert conv.state_size(20) == kernel_size - 1


def _kinds(model: LanguageModel) -> list[tuple[str, str]]:
    return [(type(b.mixer).__name__, b.state_mixer) for b in model.blocks]


def test_zoology_layout_is_hybrid_base_conv_then_mixer():
    """zoology/mixers/hybrid.py builds configs[layer_idx % 2] of [BaseConv, mixer]; every block has the
    Identity state mixer (no MLP); the head is the token embedding (zoology/model.py)."""
    model = LanguageModel(64, "based", d_model=16, n_layers=2, backbone="zoology")
    assert _kinds(model) == [("BaseConv", "identity"), ("Based", "identity")]
    assert [type(m).__name__ for m in model.mixers] == ["Based"] and len(model.convs) == 1
    assert model.head.weight is model.embed.weight
    assert all(isinstance(b.mlp, nn.Identity) for b in model.blocks)  # no MLP
    assert sum(p.numel() for p in model.parameters()) == sum(  # nothing else: embedding, norms, the two layers
        p.numel() for part in (model.embed, model.norm, *model.blocks) for p in part.parameters()
    )
    deeper = LanguageModel(64, "gla", d_model=16, n_layers=4, backbone="zoology")
    assert [k for k, _ in _kinds(deeper)] == ["BaseConv", "GLA", "BaseConv", "GLA"]
    assert model.convs[0].kernel_size == 3  # models_repo.py: conv_mixer = BaseConv(kernel_size=3)


@pytest.mark.parametrize(
    ("mixer", "cls", "state"), [("mamba", "Mamba", "none"), ("mamba2", "Mamba2", "none"), ("hyena", "Hyena", "identity")]
)
def test_zoology_layout_of_a_mixer_with_its_own_convolution(mixer, cls, state):
    """Mamba and Mamba-2 in Zoology's MambaBlock (no state mixer), Hyena in its TransformerBlock: the
    mixer in every layer, no BaseConv."""
    model = LanguageModel(64, mixer, d_model=16, n_layers=2, seq_len=16, backbone="zoology")
    assert _kinds(model) == [(cls, state)] * 2 and model.convs == []


def test_mad_and_conv_mlp_layouts():
    assert layout("mad", registry.resolve("based"), 2) == [("mixer", "mlp")] * 2
    assert layout("conv_mlp", registry.resolve("based"), 2) == [("base_conv", "none"), ("mixer", "mlp")] * 2
    assert layout("conv_mlp", registry.resolve("mamba"), 2) == [("mixer", "mlp")] * 2
    with pytest.raises(ValueError, match="model.backbone"):
        layout("transformer", registry.resolve("based"), 2)


class GatedEMAWithConv(GatedEMA):
    short_conv = True  # a user's mixer that says it carries its own short convolution


def test_a_user_mixer_declares_its_own_convolution():
    plain = LanguageModel(64, "examples.gated_ema:GatedEMA", d_model=16, backbone="zoology")
    assert [k for k, _ in _kinds(plain)] == ["BaseConv", "GatedEMA"]  # undeclared: a BaseConv ahead
    registry.register("gated_ema_with_conv_test", GatedEMAWithConv)
    own = LanguageModel(64, "gated_ema_with_conv_test", d_model=16, backbone="zoology")
    assert [k for k, _ in _kinds(own)] == ["GatedEMAWithConv"] * 2 and own.convs == []


@pytest.mark.parametrize("backbone", ["zoology", "conv_mlp", "mad"])
@pytest.mark.parametrize("mixer", ["attention", "based", "mamba", "hyena", "lru"])
def test_whole_model_decode_reproduces_the_parallel_forward(mixer, backbone):
    """Token by token through every layer's `step` (the BaseConv's k - 1 past inputs included), the
    logits equal the parallel forward's."""
    model = LanguageModel(32, mixer, d_model=16, seq_len=12, backbone=backbone).double().eval()
    tokens = torch.randint(0, 32, (2, 12))
    with torch.no_grad():
        full = model(tokens)
    state, logits = model.init_state(2), []
    for t in range(12):
        out, state = model.step(tokens[:, t], state)
        logits.append(out)
    assert torch.allclose(torch.stack(logits, dim=1), full, atol=1e-10)


@pytest.mark.parametrize(
    ("mixer", "total", "absolute"),
    # the logits' sum and absolute sum at eb60fbf, the commit before backbones were named, whose
    # single model the published MAD records trained in (computed there with the lines below)
    [("based", 58.166870696353726, 434.6171586631099), ("mamba", -28.824493942025583, 480.97311264445307),
     ("hyena", 5.065552504151128, 485.23853297194)],
)  # fmt: skip
def test_mad_backbone_builds_the_model_the_mad_records_trained_in(mixer, total, absolute):
    torch.manual_seed(0)
    model = LanguageModel(32, mixer, d_model=16, seq_len=16, backbone="mad")
    torch.manual_seed(1)
    logits = model(torch.randint(0, 32, (2, 16))).detach().double()
    assert logits.sum().item() == pytest.approx(total, rel=1e-5)
    assert logits.abs().sum().item() == pytest.approx(absolute, rel=1e-5)


def test_relabel_names_the_backbone_and_moves_a_task(tmp_path):
    """Records without `model.backbone` are rewritten under the key their config has with it (what a
    sweep of the same config now looks up), MQAR's into the other store; named ones are left."""
    from record_factory import valid_record

    from benchmarks.relabel import carry_backbone
    from benchmarks.store import Store, run_key

    store, other = Store(tmp_path / "a"), Store(tmp_path / "b")
    records = []
    for task in ("mqar", "compression"):
        cfg = {"architecture": {"name": "lru"}, "task": {"name": task, "seq_len": 32},
               "model": {"d_model": 16, "n_layers": 2}, "train": {"lr": 1e-3}, "seed": 0}  # fmt: skip
        records.append(valid_record(cfg))
        store.write(records[-1])
    named = {**records[0]["config"], "model": {"d_model": 8, "backbone": "zoology"}}
    store.write(valid_record(named))
    assert carry_backbone(store, "mad", {"mqar": other}) == {str(other.root): 1, str(store.root): 1}
    moved, = other.records()
    assert moved["config"]["model"]["backbone"] == "mad" and moved["relabelled"]["from_key"] == records[0]["key"]
    assert moved["key"] == run_key({**records[0]["config"], "model": {"d_model": 16, "n_layers": 2, "backbone": "mad"}})
    kept = {r["key"]: r for r in store.records()}
    assert run_key(named) in kept and records[1]["key"] not in kept and len(kept) == 2
    assert not store.exists(records[0]["key"])
