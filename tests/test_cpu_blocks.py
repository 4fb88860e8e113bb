"""The fused CPU kernels of whole mixer blocks (float32, architectures/csrc/) against their PyTorch
reference paths: Mamba's and Mamba-2's block around the scan (`selective_scan._CompiledScanBlock`),
Hyena's operator (`hyena._CompiledHyena`) and H3's mixing (`h3._CompiledH3Mix`). Values and every
gradient, against the reference in float32 and in float64, and a NaN stays NaN."""

import sys
from pathlib import Path

import pytest
import torch

from architectures import cpu_kernels, registry

ROOT = Path(__file__).resolve().parent.parent

FUSED = {
    "mamba": "_CompiledScanBlockBackward",
    "mamba2": "_CompiledScanBlockBackward",
    "hyena": "_CompiledHyenaBackward",
    "h3": "_CompiledH3MixBackward",
}


def _built(name: str) -> bool:
    return cpu_kernels.load("selective_scan" if name.startswith("mamba") else "causal_conv") is not None


def _graph_has(y: torch.Tensor, node: str) -> bool:
    seen, stack = set(), [y.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == node:
            return True
        stack.extend(f for f, _ in fn.next_functions)
    return False


def _build(name: str, d_model: int, length: int, large_dt: bool = False, **kw):
    torch.manual_seed(0)
    mixer = registry.build(name, d_model=d_model, **({"max_len": length} if name == "hyena" else {}), **kw)
    with torch.no_grad():
        if large_dt and name == "mamba":  # step sizes past softplus's threshold (20), where it is the identity
            mixer.dt_proj.bias[:3] = 25.0
        if large_dt and name == "mamba2":
            mixer.dt_bias[0] = 25.0
    return mixer


def _reference(mixer, x):
    mixer.kernel_choice = "reference"
    try:
        y = mixer(x)
        return y, torch.autograd.grad(y.square().sum(), [x, *mixer.parameters()])
    finally:
        mixer.kernel_choice = "auto"


@pytest.mark.parametrize(("d_model", "length", "large_dt"), [(32, 40, False), (24, 17, False), (16, 1, False), (32, 24, True)])
@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_block_matches_the_reference_in_values_and_gradients(name, d_model, length, large_dt):
    """Channel counts that are and are not multiples of the kernels' blocks of 16 and 32 channels, L across
    several checkpoint chunks and L = 1; the reference in float32 (tight) and in float64 (the fp32 error)."""
    if not _built(name):
        pytest.skip("no C compiler: the kernel is not built")
    _matches_the_reference(name, _build(name, d_model, length, large_dt), d_model, length)


@pytest.mark.parametrize("d_state", [5, 6, 7])
def test_fused_mamba_block_with_odd_state_sizes_matches_the_reference(d_state):
    """State sizes that no block of the kernel's loops divides (the state sizes of the presets are 4 to 32)."""
    if not _built("mamba"):
        pytest.skip("no C compiler: the kernel is not built")
    _matches_the_reference("mamba", _build("mamba", 32, 40, d_state=d_state), 32, 40)


def _matches_the_reference(name: str, mixer, d_model: int, length: int) -> None:
    x = torch.randn(3, length, d_model, requires_grad=True)
    y = mixer(x)
    assert _graph_has(y, FUSED[name])
    got = torch.autograd.grad(y.square().sum(), [x, *mixer.parameters()])
    with torch.no_grad():  # the forward alone, which keeps nothing for a backward
        torch.testing.assert_close(mixer(x), y, rtol=0, atol=0)
    ref, want = _reference(mixer, x)
    assert not _graph_has(ref, FUSED[name])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    x64 = x.detach().double().requires_grad_()
    ref64, want64 = _reference(mixer.double(), x64)
    torch.testing.assert_close(y.double(), ref64, rtol=1e-4, atol=1e-5)
    for a, b in zip(got, want64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_block_keeps_a_nan(name):
    """A diverging run must show its NaN: one NaN input reaches every later output of its sequence (and
    the gradients), no earlier one and no other sequence (no -ffast-math, NaN-preserving exp)."""
    if not _built(name):
        pytest.skip("no C compiler: the kernel is not built")
    mixer = _build(name, 16, 24)
    x = torch.randn(2, 24, 16)
    x[0, 5, 3] = float("nan")
    x.requires_grad_()
    y = mixer(x)
    assert _graph_has(y, FUSED[name])
    assert y[0, 5:].isnan().all() and not y[0, :5].isnan().any() and not y[1].isnan().any()
    (gx,) = torch.autograd.grad(y[1].sum(), [x], retain_graph=True)
    assert not gx[1].isnan().any()
    (gx,) = torch.autograd.grad(y[0, -1].sum(), [x])
    assert gx[0].isnan().any()


@pytest.mark.skipif(not _built("mamba"), reason="no C compiler, or the kernel did not build")
def test_comparing_two_kernel_builds_refuses_a_build_whose_gradients_differ(tmp_path, capsys):
    """benchmarks/perf/compare_kernel_builds.py times a kernel's two builds only where they agree: a build
    with a broken adjoint (one gradient term dropped) is reported as different (exit 1), a missing
    source exits 2, before anything is timed."""
    import shutil

    sys.path.insert(0, str(ROOT / "benchmarks" / "perf"))
    from compare_kernel_builds import main

    csrc = ROOT / "architectures" / "csrc"
    for header in csrc.glob("*.h"):
        shutil.copy(header, tmp_path)
    source = (csrc / "selective_scan.c").read_text()
    broken = source.replace("st16(gA + o, ld16(gA + o) + e0 * t0);", "st16(gA + o, ld16(gA + o) + e0);")
    assert broken != source
    (tmp_path / "broken.c").write_text(broken)
    assert main([str(tmp_path / "missing.c"), "--mixers", "mamba"]) == 2
    assert main([str(tmp_path / "broken.c"), "--mixers", "mamba", "--rounds", "1", "--seconds", "0.01"]) == 1
    assert "the builds differ" in capsys.readouterr().out
