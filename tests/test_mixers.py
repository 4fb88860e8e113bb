"""Every registered mixer against ground truth: its operator reproduces its output, decoding
reproduces the parallel form, ESS never exceeds the declared state size."""

import pytest
import torch

from architectures import registry
from architectures.base import MixerOperator, cache_bytes, decode
from benchmarks.ess import Semiseparable, effective_state_size

D_MODEL, LENGTH, BATCH = 32, 24, 2


def dense(matrix):
    return matrix.dense() if isinstance(matrix, Semiseparable) else matrix


@pytest.fixture(params=registry.names())
def mixer(request):
    torch.manual_seed(0)
    return registry.build(request.param, d_model=D_MODEL).double()


@pytest.fixture
def x():
    return torch.randn(BATCH, LENGTH, D_MODEL, dtype=torch.float64)


def test_output_shape(mixer, x):
    assert mixer(x).shape == x.shape


def test_operator_reproduces_outputs_and_forward(mixer, x):
    op = mixer.operator(x)
    assert isinstance(op, MixerOperator)
    channels = op.inputs.shape[1]
    T = dense(op.matrix)
    assert T.shape == (BATCH, channels, LENGTH, LENGTH) and op.outputs.shape == op.inputs.shape
    product = (T @ op.inputs.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(product, op.outputs, rtol=1e-8, atol=1e-8)
    # the materialized operator, pushed through the rest of the block, gives the mixer's forward output
    # (a MIMO mixer whose channels are single-input single-output pieces, the LRU, has no readout)
    if callable(mixer.readout):
        torch.testing.assert_close(mixer.readout(product, x), mixer(x), rtol=1e-8, atol=1e-8)


def test_operator_is_causal(mixer, x):
    T = dense(mixer.operator(x).matrix)
    assert T.triu(1).abs().max() == 0
    # and the output at t does not change when the future changes
    y = mixer(x)
    x2 = x.clone()
    x2[:, LENGTH // 2 :] = torch.randn_like(x2[:, LENGTH // 2 :])
    torch.testing.assert_close(mixer(x2)[:, : LENGTH // 2], y[:, : LENGTH // 2])


def test_ess_never_above_state_size(mixer, x):
    ess = effective_state_size(mixer.operator(x).matrix)
    assert ess.max().item() <= mixer.state_size(LENGTH)


def test_step_reproduces_forward(mixer, x):
    y_steps, state = decode(mixer, x)
    torch.testing.assert_close(y_steps, mixer(x), rtol=1e-8, atol=1e-8)
    assert cache_bytes(state) > 0


def test_gradients_flow(mixer, x):
    mixer.float()
    mixer(x.float()).pow(2).mean().backward()
    grads = [p.grad for p in mixer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", registry.names())
def test_bf16_parameters_match_fp32(name):
    """A model cast to bf16 (the GPU throughput setting) runs forward, backward and decoding in bf16
    and agrees with the same weights in fp32 up to bf16 rounding."""
    torch.manual_seed(0)
    low = registry.build(name, d_model=D_MODEL).to(torch.bfloat16)
    full = registry.build(name, d_model=D_MODEL)
    full.load_state_dict({k: v.float() for k, v in low.state_dict().items()})
    x = torch.randn(BATCH, LENGTH, D_MODEL).to(torch.bfloat16)
    y = low(x.requires_grad_())
    y.float().square().mean().backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    expected = full(x.detach().float())
    assert (y.float() - expected).norm() / expected.norm() < 0.03
    state = low.init_state(BATCH)
    for t in range(3):
        y_t, state = low.step(x[:, t].detach(), state)
    assert y_t.dtype == torch.bfloat16
    assert (y_t.float() - expected[:, 2]).norm() / expected[:, 2].norm() < 0.03


def test_unknown_mixer_lists_known_names():
    with pytest.raises(KeyError) as err:
        registry.build("transformerz", d_model=8)
    for name in registry.names():
        assert name in str(err.value)
    with pytest.raises(ValueError):
        registry.build("transformerz", d_model=8)


@pytest.mark.parametrize(
    "name, config, field",
    [
        ("attention", {"d_model": 30, "num_heads": 4}, "d_model"),
        ("attention", {"d_model": 0}, "d_model"),
        ("attention", {"d_model": 32, "kernel": "turbo"}, "kernel"),
        ("mamba", {"d_model": 32, "d_state": 0}, "d_state"),
        ("mamba", {"d_model": 32, "d_conv": -1}, "d_conv"),
        ("mamba", {"d_model": 32, "wings": 2}, "wings"),
    ],
)
def test_config_errors_name_the_field(name, config, field):
    with pytest.raises(ValueError, match=field):
        registry.build(name, **config)


def test_lru_channel_operator_is_the_jacobian_of_its_forward():
    """The LRU is linear in its input: channel a's operator must be d y_a(t) / d u_a(s) for s < t
    (the diagonal also holds the D skip and the instantaneous term)."""
    torch.manual_seed(0)
    mixer = registry.build("lru", d_model=4, state_dim=3).double()
    x = torch.randn(1, 10, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda u: mixer(u), x)[0, :, :, 0]  # (t, a, s, b)
    T = dense(mixer.operator(x).matrix)[0]  # (a, t, s)
    strictly_past = torch.ones(10, 10, dtype=torch.bool).tril(-1)
    for a in range(4):
        torch.testing.assert_close(jac[:, a, :, a][strictly_past], T[a][strictly_past], rtol=1e-10, atol=1e-12)
    ranks = effective_state_size(T.unsqueeze(0))
    assert ranks.max() > 2 and ranks.max() <= 2 * 3  # through all modes: more than one, at most 2 * state_dim


class _DiagonalCheat(registry.resolve("mamba")):
    """Reports the operator diag(outputs / inputs): it reproduces the outputs on the input it was built
    for, is causal and has ESS 0, but it is not the map from inputs to outputs."""

    def operator(self, x):
        op = super().operator(x)
        return type(op)(torch.diag_embed(op.outputs / op.inputs), op.inputs, op.outputs)


def test_every_mixer_operator_is_the_jacobian_of_its_frozen_forward():
    from benchmarks.conformance import check_mixer

    for name in registry.names():
        report = check_mixer(name)
        (frozen,) = [c for c in report.checks if c.name == "frozen"]  # defined for every reference mixer
        assert frozen.passed, f"{name}: {frozen.detail}"
    cheat = check_mixer(f"{__name__}:_DiagonalCheat")
    failed = {c.name for c in cheat.checks if not c.passed}
    assert "frozen" in failed and "reproduces" not in failed, cheat.message()  # only the Jacobian sees it


def test_sliding_window_tss_is_the_tight_bound_w_minus_1():
    # each token sees itself and the w - 1 before it: block T[i:, :i] reaches w - 1 past tokens, so its
    # rank is at most w - 1 (the keys the cache holds), and a generic instance attains it
    torch.manual_seed(0)
    mixer = registry.build("sliding_window", d_model=8, window_size=5).double()
    x = torch.randn(2, 24, 8, dtype=torch.float64)
    ranks = effective_state_size(dense(mixer.operator(x).matrix))
    assert mixer.state_size(24) == 4 and ranks.max() == 4


@pytest.mark.parametrize("layout", ["channels_last", "time_contiguous"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("taps", [1, 3, 4])
def test_causal_conv_matches_the_module_in_value_and_gradient(taps, dtype, layout):
    """The CPU causal depthwise conv (Mamba, Mamba-2, Hyena, BaseConv) against ground truth: the
    nn.Conv1d module's first L outputs and autograd's gradients through it, on a non-contiguous input
    as the mixers pass it (a transposed projection) and a contiguous one. float64 takes the PyTorch path with its
    convolutional backward, float32 the compiled C loops (architectures/csrc/causal_conv.c)."""
    from architectures import cpu_kernels
    from architectures.base import causal_conv

    if dtype == torch.float32 and cpu_kernels.load("causal_conv") is None:
        pytest.skip("no C compiler: the compiled convolution is not built")
    conv = torch.nn.Conv1d(6, 6, taps, groups=6, padding=taps - 1).to(dtype)
    x = torch.randn(3, 10, 6, dtype=dtype).transpose(1, 2)
    x = (x if layout == "channels_last" else x.contiguous()).requires_grad_()
    grad = torch.randn(3, 6, 10, dtype=dtype)
    y = causal_conv(conv, x)
    y.backward(grad)
    got = (x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone())
    x.grad = None
    conv.zero_grad()
    ref = conv(x)[..., :10]
    ref.backward(grad)
    torch.testing.assert_close(y, ref)
    for g, r in zip(got, (x.grad, conv.weight.grad, conv.bias.grad), strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("length", [1, 7, 64])
def test_hyena_long_conv_direct_equals_fft(length, dtype):
    """Hyena's two paths for its long convolution, direct (short sequences on a CPU: the compiled
    convolution in float32) and by FFT, against the definition sum_{s <= t} h[t - s] u[s], values and
    gradients, on a channels-last input as Hyena's gates give it."""
    from architectures.hyena import causal_long_conv, fft_causal_conv

    torch.manual_seed(0)
    u = torch.randn(2, length, 3, dtype=dtype).transpose(1, 2).requires_grad_()
    h = torch.randn(3, length, dtype=dtype, requires_grad=True)
    direct = causal_long_conv(u, h)
    by_fft = fft_causal_conv(u, h)
    definition = torch.stack(
        [sum(h[:, t - s] * u[..., s] for s in range(t + 1)) for t in range(length)], dim=-1
    )  # fmt: skip
    torch.testing.assert_close(direct, definition)
    torch.testing.assert_close(by_fft, definition)
    grad = torch.randn_like(direct)
    for a, b in zip(torch.autograd.grad(direct, (u, h), grad), torch.autograd.grad(by_fft, (u, h), grad), strict=True):
        torch.testing.assert_close(a, b)


def test_hyena_trained_positions_start_at_the_fixed_encoding_and_train():
    """`train_positions=True` (Zoology's filter: its positional encoding is a parameter): at
    initialisation the same mixer as with the fixed encoding, output for output; the encoding then
    gets a gradient and changes what the mixer computes, and its decoding step still equals its forward."""
    from architectures.hyena import Hyena

    torch.manual_seed(0)
    fixed = Hyena(16, max_len=12, filter_order=8)
    trained = Hyena(16, max_len=12, filter_order=8, train_positions=True)
    missing, unexpected = trained.load_state_dict(fixed.state_dict(), strict=False)
    assert missing == ["filter.z"] and not unexpected
    x = torch.randn(2, 10, 16)
    torch.testing.assert_close(trained(x), fixed(x))
    trained(x).pow(2).sum().backward()
    assert trained.filter.z.grad is not None and trained.filter.z.grad.abs().sum() > 0
    with torch.no_grad():
        trained.filter.z.add_(0.1 * torch.randn_like(trained.filter.z))
    assert not torch.allclose(trained(x), fixed(x))
    state, steps = trained.init_state(2), []
    for t in range(x.shape[1]):
        y_t, state = trained.step(x[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), trained(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_compiled_cpu_scan_equals_the_reference_path_in_the_mixer(name):
    """Mamba's and Mamba-2's training path on a CPU (the compiled scan, kernel "s6-cpu") against their
    PyTorch reference path, in float32: outputs and every parameter's gradient."""
    from architectures import cpu_kernels

    if cpu_kernels.load("selective_scan") is None:
        pytest.skip("no C compiler: the compiled scan is not built")
    torch.manual_seed(0)
    mixer = registry.build(name, d_model=32)
    x = torch.randn(3, 40, 32, requires_grad=True)
    y = mixer(x)
    assert mixer.kernel == "s6-cpu"
    got = torch.autograd.grad(y.square().sum(), [x, *mixer.parameters()])
    mixer.kernel_choice = "reference"
    ref = mixer(x)
    assert mixer.kernel == "reference"
    want = torch.autograd.grad(ref.square().sum(), [x, *mixer.parameters()])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
