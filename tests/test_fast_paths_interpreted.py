"""The fast paths' calls checked on a CPU: `nox -s fast-paths-cpu`; skipped elsewhere.

A CPU machine cannot launch CUDA kernels, but it can run Triton kernels in Triton's
interpreter (TRITON_INTERPRET=1), so the kernels the fast paths call are run for real:
flash-linear-attention's `chunk_gla` (linear attention, GLA, WLA, Based) and mamba-ssm's
`mamba_chunk_scan_combined` (Mamba-2's SSD), forward and backward. mamba-ssm's
`selective_scan_fn` and causal-conv1d's `causal_conv1d_fn` are CUDA extensions; they are
replaced by the same packages' reference functions, which take the same arguments
(`selective_scan_ref`, `causal_conv1d_ref`), behind the argument checks (dtypes, shapes,
layouts) of the extensions' C++ entry points: for Mamba this checks our side of the call,
not the CUDA kernels. flash-attn has no CPU form: how we call it is tested in
`tests/test_flash_attn_convention.py`, the kernel itself in `tests/test_cuda.py`.

What is patched, for the interpreter only: autotuners take their first config (the
interpreter has no benchmarker), loop counters get a no-op `.to()` (the interpreter hands
out Python ints where compiled Triton has tensors), and the CUDA device context / property
queries that mamba-ssm's host code makes are answered for a CPU tensor.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import os
import sys
import types

import pytest
import torch

pytestmark = [
    pytest.mark.interpret,
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 and the kernels (nox -s fast-paths-cpu)"
    ),
]

# mixer -> the kernel label its fast path records
FAST_LABEL = {
    "linear_attention": "fla-chunk_gla",
    "gla": "fla-chunk_gla",
    "wla": "fla-chunk_gla",
    "based": "fla-chunk_gla",
    "mamba": "mamba-ssm",
    "mamba2": "mamba-ssm-ssd",
}


class _LoopIndex(int):
    def to(self, *args, **kwargs):  # `i_t.to(tl.int64)` on a loop counter
        return self


def _range(*args):
    return (_LoopIndex(i) for i in builtins.range(*(int(a) for a in args)))


FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _selective_scan_checks(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The argument checks of mamba-ssm's selective_scan_fwd (csrc/selective_scan/selective_scan.cpp)."""
    assert u.dtype in FLOATS and A.dtype in (torch.float32, torch.complex64)
    assert delta.dtype == u.dtype, f"delta is {delta.dtype}, u is {u.dtype}: the kernel needs the same dtype"
    batch, dim, length = u.shape
    assert delta.shape == u.shape and A.shape[0] == dim
    for name, t in (("B", B), ("C", C)):
        variable = t.dim() >= 3
        assert t.dtype == (u.dtype if variable else A.dtype), f"{name} is {t.dtype}"
        if variable:
            assert t.shape[0] == batch and t.shape[-2:] == (A.shape[1], length), f"{name} shape {tuple(t.shape)}"
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        assert t is None or (t.dtype == torch.float32 and t.shape == (dim,)), name
    assert z is None or z.dtype == u.dtype


def _causal_conv1d_checks(x, weight, bias=None, *args, **kwargs):
    """The argument checks of causal-conv1d's causal_conv1d_fwd (csrc/causal_conv1d.cpp), after its
    Python wrapper's own fix-up (x made contiguous unless one of its last two strides is 1)."""
    assert x.dtype in FLOATS and weight.dtype in FLOATS
    batch, dim, length = x.shape
    assert weight.shape[0] == dim and 2 <= weight.shape[-1] <= 4
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    if channel_last:
        assert dim % 8 == 0 and x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0, "channel-last layout needs multiples of 8"
    assert bias is None or (bias.dtype == weight.dtype and bias.shape == (dim,))


def _checked(reference, checks):
    """The package's reference function behind its CUDA entry point's argument checks."""

    def checked(*args, **kwargs):
        checks(*args, **kwargs)
        return reference(*args, **kwargs)

    return checked


@pytest.fixture(scope="module")
def interpreted_kernels():
    with pytest.MonkeyPatch.context() as mp:
        for ext in ("selective_scan_cuda", "causal_conv1d_cuda"):  # imported at module level; never called here
            mp.setitem(sys.modules, ext, types.ModuleType(ext))
        # plain imports: under TRITON_INTERPRET=1 a missing kernel package is a failure, not a skip
        import causal_conv1d as conv
        import fla.ops.gla  # noqa: F401
        import mamba_ssm.ops.selective_scan_interface as scan
        import mamba_ssm.ops.triton.ssd_combined  # noqa: F401
        import triton.runtime.autotuner as autotuner

        mp.setattr(autotuner.Autotuner, "_bench", lambda self, *a, config=None, **k: [0.0, 0.0, 0.0])
        for name, module in list(sys.modules.items()):
            if module is not None and name.split(".")[0] in ("fla", "mamba_ssm"):
                mp.setattr(module, "range", _range, raising=False)
        mp.setattr(torch.cuda, "device", lambda *a, **k: contextlib.nullcontext())
        mp.setattr(torch.cuda, "get_device_properties", lambda *a, **k: types.SimpleNamespace(multi_processor_count=132))
        mp.setattr(scan, "selective_scan_fn", _checked(scan.selective_scan_ref, _selective_scan_checks))
        mp.setattr(conv, "causal_conv1d_fn", _checked(conv.causal_conv1d_interface.causal_conv1d_ref, _causal_conv1d_checks))

        # the mixers take their fast path on CUDA only: let them take it on the CPU, probes included
        import architectures.kernels

        mp.setattr(architectures.kernels, "FAST_DEVICE_TYPES", frozenset({"cuda", "cpu"}))
        mp.setattr(architectures.kernels, "_verdicts", {})
        yield


@pytest.mark.parametrize("name", sorted(FAST_LABEL))
def test_fast_path_matches_reference(interpreted_kernels, name):
    from architectures import registry

    torch.manual_seed(0)
    fast = registry.build(name, d_model=64, kernel="fast")  # raises if the kernel fails its probe
    reference = copy.deepcopy(fast)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 160, 64, requires_grad=True)  # 160: several chunks of 64 and a partial one
    y_fast, y_ref = fast(x), reference(x)
    assert (fast.kernel, reference.kernel) == (FAST_LABEL[name], "reference")
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-4, atol=1e-5)

    loss_fast, loss_ref = y_fast.square().sum(), y_ref.square().sum()
    grads_fast = torch.autograd.grad(loss_fast, [x, *fast.parameters()])
    grads_ref = torch.autograd.grad(loss_ref, [x, *reference.parameters()])
    for (param, _), g_fast, g_ref in zip([("x", x), *fast.named_parameters()], grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-4, msg=lambda m, p=param: f"{name} grad of {p}: {m}")


@pytest.mark.parametrize("name", ["gla", "based", "mamba", "mamba2"])  # based: the normalised path
def test_fast_path_chosen_and_correct_under_autocast(interpreted_kernels, name, monkeypatch):
    """Training runs under autocast, so that is where the first call (and the kernel's probe)
    usually happens, and where the kernels see mixed dtypes. fp16 stands in for bf16 here: the
    interpreter does not emulate bf16."""
    import architectures.kernels
    from architectures import registry

    monkeypatch.setattr(architectures.kernels, "_verdicts", {})  # probe afresh, inside autocast
    # CUDA's autocast runs softplus in fp32 (torch.amp's fp32 list); the CPU's leaves it in fp16
    softplus = torch.nn.functional.softplus
    monkeypatch.setattr(torch.nn.functional, "softplus", lambda t, *a, **k: softplus(t.float(), *a, **k))
    torch.manual_seed(0)
    fast = registry.build(name, d_model=64)
    reference = copy.deepcopy(fast)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 160, 64)
    with torch.autocast("cpu", dtype=torch.float16):
        y_fast, y_ref = fast(x), reference(x)
    assert fast.kernel == FAST_LABEL[name]
    torch.testing.assert_close(y_fast, y_ref, rtol=2e-2, atol=2e-2)


def test_mamba_fast_path_takes_any_width(interpreted_kernels):
    """d_inner = 68 is not a multiple of 8, which causal-conv1d's channel-last layout would need."""
    from architectures import registry

    mixer = registry.build("mamba", d_model=34, kernel="fast")
    reference = copy.deepcopy(mixer)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 24, 34)
    torch.testing.assert_close(mixer(x), reference(x), rtol=1e-4, atol=1e-5)
