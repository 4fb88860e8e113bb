"""The C kernel of the gated-linear family's training path (csrc/linear_recurrence.c: GLA, linear attention,
WLA; Based's closed form) against the PyTorch chunked form: values and every gradient, in float64 to 1e-9 and float32 to
rounding, odd sizes, decays per key dim, per head or none, normalized (no decay) or not, NaN propagation, and the
mixers' routing (the kernel in training, the reference path on request and for `operator` / `frozen`)."""

import pytest
import torch

from architectures import registry
from architectures.linear_recurrence import chunked_gla
from architectures.linear_recurrence_kernel import compiled_available, compiled_linear

# Based's forward instead takes its feature maps' kernel in closed form (faster than any recurrence at K 273)
LABELS = {"gla": "linear-recurrence-cpu", "linear_attention": "linear-recurrence-cpu", "wla": "linear-recurrence-cpu"}
LABELS["based"] = "taylor-quadratic-cpu"
MIXERS = list(LABELS)
needs_kernel = pytest.mark.skipif(not compiled_available(torch.zeros(1)), reason="the linear-recurrence C kernel did not build")


def _reference(q, k, v, log_a, normalize):
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    o, _ = chunked_gla(q, k, v, log_a, 8, with_state=False)
    return o[..., :-1] / o[..., -1:].clamp_min(1e-6) if normalize else o


def _inputs(decay, normalize, shape=(2, 3, 37, 5, 7), dtype=torch.float64, seed=0):
    b, h, length, kdim, vdim = shape
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, length, kdim, generator=g, dtype=dtype) for _ in range(2))
    if normalize:  # positive features, as the mixers' feature maps give
        q, k = q.abs(), k.abs()
    v = torch.randn(b, h, length, vdim, generator=g, dtype=dtype)
    log_a = None
    if decay == "head":
        log_a = -torch.rand(1, h, 1, 1, generator=g, dtype=dtype)
    elif decay == "key":
        log_a = -torch.rand(b, h, length, kdim, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v)] + ([] if log_a is None else [log_a.requires_grad_()])


def _both(leaves, normalize, shape):
    b, h, length = shape[:3]
    q, k, v, *rest = leaves
    log_a = rest[0].expand(b, h, length, rest[0].shape[-1]) if rest else None
    return compiled_linear(q, k, v, log_a, normalize), _reference(q, k, v, log_a, normalize)


@needs_kernel
@pytest.mark.parametrize(("decay", "normalize"), [("none", False), ("head", False), ("key", False), ("none", True)])
@pytest.mark.parametrize("shape", [(2, 3, 37, 5, 7), (1, 1, 1, 1, 1), (3, 2, 70, 9, 33), (2, 1, 41, 64, 64)])
def test_kernel_matches_chunked_in_value_and_gradient(decay, normalize, shape):
    leaves = _inputs(decay, normalize, shape)
    got, want = _both(leaves, normalize, shape)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # no checkpoints kept: the same outputs
        torch.testing.assert_close(_both(leaves, normalize, shape)[0], got, rtol=0, atol=0)
    w = torch.randn(got.shape, generator=torch.Generator().manual_seed(1), dtype=got.dtype)
    for x, y in zip(torch.autograd.grad(got, leaves, w), torch.autograd.grad(want, leaves, w), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


@needs_kernel
@pytest.mark.parametrize("decay", ["none", "key"])
def test_kernel_propagates_nan(decay):
    shape = (2, 2, 20, 4, 3)
    leaves = _inputs(decay, False, shape)
    with torch.no_grad():
        leaves[1][0, 1, 5, 2] = float("nan")  # one key of one sequence
    got, want = _both(leaves, False, shape)
    # the chunked form with a decay per key dim spreads a NaN over its whole chunk (0 * NaN above the diagonal);
    # the recurrence, causally, from step 5 on
    assert not (got.isnan() & ~want.isnan()).any()
    assert got[0, 1, 5:].isnan().all() and not got[0, 1, :5].isnan().any() and not got[1].isnan().any()
    grads = torch.autograd.grad(got.sum(), leaves)
    assert grads[2][0, 1].isnan().any() and not grads[2][1].isnan().any()


@needs_kernel
@pytest.mark.parametrize("d_model", [32, 64])  # 64: the training shape, whose value dims (16, 64) the fp32 loops unroll
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", MIXERS)
def test_mixers_kernel_matches_reference_path(name, dtype, d_model):
    """The training forward runs the kernel; outputs and every parameter's and the input's gradients match
    kernel="reference": to 1e-9 in float64, to fp32 rounding in float32."""
    torch.manual_seed(0)
    fast = registry.build(name, d_model=d_model).to(dtype)
    torch.manual_seed(0)
    ref = registry.build(name, d_model=d_model, kernel="reference").to(dtype)
    x = torch.randn(3, 45, d_model, dtype=dtype)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_fast, y_ref = fast(x_fast), ref(x_ref)
    assert (fast.kernel, ref.kernel) == (LABELS[name], "reference")
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(y_fast, y_ref, **tol)
    w = torch.randn(y_fast.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    (y_fast * w).sum().backward()
    (y_ref * w).sum().backward()
    if dtype == torch.float32:
        tol = {"rtol": 1e-3, "atol": 1e-4}
    torch.testing.assert_close(x_fast.grad, x_ref.grad, **tol)
    for (n, p), (_, p_ref) in zip(fast.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, **tol, msg=lambda m, n=n: f"{n}: {m}")


@needs_kernel
@pytest.mark.parametrize("name", MIXERS)
def test_operator_and_frozen_keep_the_reference_path(name):
    torch.manual_seed(0)
    mixer = registry.build(name, d_model=32).double()
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    y = mixer(x)
    assert mixer.kernel == LABELS[name]
    op = mixer.operator(x)
    assert mixer.kernel == "reference"
    torch.testing.assert_close(mixer.readout(op.outputs, x), y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mixer.frozen(x)(op.inputs), op.outputs, rtol=0, atol=0)


@needs_kernel
@pytest.mark.parametrize("name", MIXERS)
def test_bfloat16_keeps_the_reference_path(name):
    mixer = registry.build(name, d_model=32).to(torch.bfloat16)
    with torch.no_grad():
        mixer(torch.randn(1, 9, 32, dtype=torch.bfloat16))
    assert mixer.kernel == "reference"


def test_based_beyond_l_256_keeps_the_chunked_form():
    mixer = registry.build("based", d_model=32)
    with torch.no_grad():
        mixer(torch.randn(1, 257, 32))
    assert mixer.kernel == "reference"
