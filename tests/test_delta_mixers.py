"""DeltaNet, Gated DeltaNet, RWKV-7 and H3 against ground truth: the chunked delta rule against its
step-by-step recurrence, decoding against the parallel forward, each operator against the outputs, the
forward and the Jacobian of the frozen forward, ESS of a case of known rank, conformance, the C kernels of
the training path against the recurrence (values and gradients) and the mixers' reference path, and (with
fla-core installed, `nox -s fast-paths-cpu`) the chunked forms against fla's naive references."""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from architectures import registry
from architectures.base import decode
from architectures.delta_rule import (
    chunked_delta_rule,
    chunked_dplr,
    compiled_available,
    compiled_delta_rule,
    compiled_dplr,
    delta_rule_matrix,
    dplr_matrix,
    recurrent_delta_rule,
    recurrent_dplr,
)
from benchmarks.ess import effective_state_size

NEW = ["deltanet", "gated_deltanet", "rwkv7", "h3"]
B, H, L, K, V = 2, 2, 37, 6, 5  # L: two full chunks of 16 and a partial one


def _inputs(seed=0, gated=True):
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    q = torch.randn(B, H, L, K, generator=g, dtype=d)
    k = F.normalize(torch.randn(B, H, L, K, generator=g, dtype=d), dim=-1)
    v = torch.randn(B, H, L, V, generator=g, dtype=d)
    beta = torch.rand(B, H, L, generator=g, dtype=d)
    log_alpha = -torch.rand(B, H, L, generator=g, dtype=d) * 0.5 if gated else None
    return q, k, v, beta, log_alpha


def _grads(out, leaves, seed=1):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * w).sum(), leaves)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [8, 16])
def test_chunked_delta_rule_matches_recurrence_in_value_and_gradient(gated, chunk):
    q, k, v, beta, log_alpha = _inputs(gated=gated)
    leaves = [t.requires_grad_() for t in (q, k, v, beta, log_alpha) if t is not None]
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    o, S = chunked_delta_rule(q, k, v, beta, log_alpha, chunk, initial_state=S0, with_state=True)
    r, Sr = recurrent_delta_rule(q, k, v, beta, log_alpha, initial_state=S0)
    torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, Sr, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(o, leaves), _grads(r, leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # the closed-form operator on the values (no initial state) is the same map
    T = delta_rule_matrix(q, k, beta, log_alpha)
    torch.testing.assert_close(T @ v, recurrent_delta_rule(q, k, v, beta, log_alpha)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bounded", [False, True])
def test_chunked_generalized_delta_rule_matches_recurrence(bounded):
    """RWKV-7's form S_t = diag(w_t) S_{t-1} + b_t a_t^T S_{t-1} + k_t v_t^T, with both intra-chunk paths:
    pairwise decays (any w) and factored ones (a known lower bound on log w, RWKV-7's)."""
    q, k, v, _, _ = _inputs()
    g = torch.Generator().manual_seed(2)
    a = F.normalize(torch.randn(B, H, L, K, generator=g, dtype=torch.float64), dim=-1)
    b = -a * torch.rand(B, H, L, K, generator=g, dtype=torch.float64)
    log_w = -torch.rand(B, H, L, K, generator=g, dtype=torch.float64) * 0.6
    leaves = [t.requires_grad_() for t in (q, k, v, a, b, log_w)]
    o, S = chunked_dplr(q, k, v, a, b, log_w, 16, with_state=True, log_w_min=-0.61 if bounded else None)
    r, Sr = recurrent_dplr(q, k, v, a, b, log_w)
    torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, Sr, rtol=1e-10, atol=1e-10)
    for got, want in zip(_grads(o, leaves), _grads(r, leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dplr_matrix(q, k, a, b, log_w) @ v, r, rtol=1e-10, atol=1e-10)


def _mixer(name, d_model=16, **config):
    torch.manual_seed(0)
    return registry.build(name, d_model=d_model, **config).double()


@pytest.mark.parametrize("name", NEW)
def test_decoding_token_by_token_matches_forward(name):
    mixer = _mixer(name, d_model=32)
    x = torch.randn(2, L, 32, dtype=torch.float64)
    y_steps, state = decode(mixer, x)
    torch.testing.assert_close(y_steps, mixer(x), rtol=1e-9, atol=1e-9)
    assert all(t.shape[0] == 2 for t in state.values())


@pytest.mark.parametrize("name", NEW)
def test_operator_is_the_jacobian_of_the_frozen_forward(name):
    mixer = _mixer(name)
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    op = mixer.operator(x)
    T = op.matrix  # dense (B, C, L, L)
    torch.testing.assert_close((T @ op.inputs.unsqueeze(-1)).squeeze(-1), op.outputs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixer.readout(op.outputs, x), mixer(x), rtol=1e-10, atol=1e-12)
    jac = torch.autograd.functional.jacobian(mixer.frozen(x), op.inputs, vectorize=True)[0, :, :, 0]  # (c, t, c', s)
    own = jac.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (c, t, s)
    torch.testing.assert_close(own, T[0], rtol=1e-10, atol=1e-12)
    # and no channel reaches another: the per-channel operator is the whole map
    cross = jac.clone()
    idx = torch.arange(jac.shape[0])
    cross[idx, :, idx] = 0
    assert cross.abs().max() < 1e-12


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
@pytest.mark.parametrize("rank", [2, 3])
def test_keys_in_an_r_dimensional_subspace_give_ess_r(name, rank):
    """With the keys confined to r of the K key dimensions (their projection rows zeroed: SiLU(0) = 0 after
    the bias-free convolution), the state only ever holds an r-dimensional key space: every block
    T[i:, :i] has rank <= r, and exactly min(r, i, L - i) for generic inputs; the TSS is K."""
    mixer = _mixer(name)
    with torch.no_grad():
        keys = mixer.num_heads * mixer.key_dim  # qkv_proj's rows: q, then k, then v
        w = mixer.qkv_proj.weight[keys : 2 * keys].view(mixer.num_heads, mixer.key_dim, -1)
        w[:, rank:] = 0
    length = 20
    x = torch.randn(2, length, 16, dtype=torch.float64)
    ess = effective_state_size(mixer.operator(x).matrix)
    i = torch.arange(length)
    expected = torch.minimum(torch.minimum(i, length - i), torch.tensor(rank))
    assert torch.equal(ess, expected.expand_as(ess))
    assert mixer.state_size(length) == mixer.key_dim > rank


@pytest.mark.parametrize("name", NEW)
def test_conforms_with_nothing_skipped(name):
    from benchmarks.conformance import check_mixer

    report = check_mixer(name, d_model=32)
    assert report.passed, report.message()
    assert not report.skipped(), report.message()


@pytest.mark.parametrize("name", NEW)
def test_bf16_forward_backward_and_decoding_run(name):
    torch.manual_seed(0)
    mixer = registry.build(name, d_model=32).to(torch.bfloat16)
    x = torch.randn(2, 20, 32).to(torch.bfloat16).requires_grad_()
    y = mixer(x)
    y.float().square().mean().backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    y_t, _ = mixer.step(x[:, 0].detach(), mixer.init_state(2))
    assert y_t.dtype == torch.bfloat16


def _fla_naive(module: str):
    """fla's naive reference module, loaded from its file: it needs only torch and einops, not the
    Triton kernels that `fla.ops`'s package init imports."""
    pytest.importorskip("einops")
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed")
    path = Path(list(spec.submodule_search_locations)[0], *module.split(".")[1:]).with_suffix(".py")
    loaded = importlib.util.spec_from_file_location(f"_naive_{path.parent.name}", path)
    mod = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(mod)
    return mod


@pytest.mark.interpret
def test_chunked_forms_match_flas_naive_references():
    """fla-core's naive recurrences (they compute in float32: given float32 copies) against the chunked
    forms in float64, to 1e-5:
    the delta rule (q scaled by d_k^-1/2 inside fla's), the gated delta rule ([B, T, H, .] layout, scale
    given), and the DPLR recurrence RWKV-7's kernel calls with a = -kappa_hat, b = kappa_hat * a."""
    q, k, v, beta, log_alpha = _inputs()
    scale = K**-0.5
    ref, _ = _fla_naive("fla.ops.delta_rule.naive").delta_rule_recurrence(*(x.float() for x in (q, k, v, beta)))
    torch.testing.assert_close(chunked_delta_rule(q * scale, k, v, beta)[0], ref.double(), rtol=1e-5, atol=1e-5)
    if compiled_available(q):
        torch.testing.assert_close(compiled_delta_rule(q * scale, k, v, beta)[0], ref.double(), rtol=1e-5, atol=1e-5)

    naive_gated = _fla_naive("fla.ops.gated_delta_rule.naive").naive_recurrent_gated_delta_rule
    t = [x.transpose(1, 2).float() for x in (q, k, v, beta, log_alpha)]
    ref, _ = naive_gated(t[0], t[1], t[2], t[3], t[4], scale=scale)
    got = chunked_delta_rule(q * scale, k, v, beta, log_alpha)[0]
    torch.testing.assert_close(got, ref.transpose(1, 2).double(), rtol=1e-5, atol=1e-5)
    if compiled_available(q):
        got = compiled_delta_rule(q * scale, k, v, beta, log_alpha)[0]
        torch.testing.assert_close(got, ref.transpose(1, 2).double(), rtol=1e-5, atol=1e-5)

    g = torch.Generator().manual_seed(3)
    kappa = F.normalize(torch.randn(B, H, L, K, generator=g, dtype=torch.float64), dim=-1)
    iclr = torch.rand(B, H, L, K, generator=g, dtype=torch.float64)
    log_w = -torch.rand(B, H, L, K, generator=g, dtype=torch.float64) * 0.6
    ref, _ = _fla_naive("fla.ops.generalized_delta_rule.dplr.naive").dplr_recurrence(
        *(x.float() for x in (q, k, v, -kappa, kappa * iclr, log_w))
    )
    got = chunked_dplr(q * scale, k, v, -kappa, kappa * iclr, log_w, 16, log_w_min=-0.61)[0]
    torch.testing.assert_close(got, ref.double(), rtol=1e-5, atol=1e-5)
    if compiled_available(q):  # the C kernel of the training path too
        got = compiled_dplr(q * scale, k, v, -kappa, kappa * iclr, log_w)[0]
        torch.testing.assert_close(got, ref.double(), rtol=1e-5, atol=1e-5)


def _dplr_inputs(seed=4):
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    a = F.normalize(torch.randn(B, H, L, K, generator=g, dtype=d), dim=-1)
    b = -a * torch.rand(B, H, L, K, generator=g, dtype=d)
    log_w = -torch.rand(B, H, L, K, generator=g, dtype=d) * 0.6
    return a, b, log_w


def _loss(o, S):
    """A loss on the outputs and the final state, so that both gradients enter the backward."""
    return (o * _weights(o, 1)).sum() + (S * _weights(S, 5)).sum()


def _weights(t, seed):
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(seed), dtype=t.dtype)


needs_kernel = pytest.mark.skipif(not compiled_available(torch.zeros(1)), reason="the delta-rule C kernel did not build")


@needs_kernel
@pytest.mark.parametrize("gated", [False, True])
def test_compiled_delta_rule_matches_recurrence_in_value_and_gradient(gated):
    """The C kernel (csrc/delta_rule.c) in float64 against the step-by-step reference: outputs, final state,
    and the gradients of every input and of the initial state."""
    q, k, v, beta, log_alpha = _inputs(gated=gated)
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (q, k, v, beta, log_alpha, S0) if t is not None]
    o, S = compiled_delta_rule(q, k, v, beta, log_alpha, initial_state=S0)
    r, Sr = recurrent_delta_rule(q, k, v, beta, log_alpha, initial_state=S0)
    torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, Sr, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # no checkpoints kept: the same outputs
        torch.testing.assert_close(compiled_delta_rule(q, k, v, beta, log_alpha, initial_state=S0)[0], o, rtol=0, atol=0)
    got, want = torch.autograd.grad(_loss(o, S), leaves), torch.autograd.grad(_loss(r, Sr), leaves)
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


@needs_kernel
def test_compiled_dplr_matches_recurrence_in_value_and_gradient():
    q, k, v, _, _ = _inputs()
    g = torch.Generator().manual_seed(4)
    a = F.normalize(torch.randn(B, H, L, K, generator=g, dtype=torch.float64), dim=-1)
    b = -a * torch.rand(B, H, L, K, generator=g, dtype=torch.float64)
    log_w = -torch.rand(B, H, L, K, generator=g, dtype=torch.float64) * 0.6
    S0 = torch.randn(B, H, K, V, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (q, k, v, a, b, log_w, S0)]
    o, S = compiled_dplr(q, k, v, a, b, log_w, initial_state=S0)
    r, Sr = recurrent_dplr(q, k, v, a, b, log_w, initial_state=S0)
    torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(S, Sr, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(compiled_dplr(q, k, v, a, b, log_w, initial_state=S0)[0], o, rtol=0, atol=0)
    got, want = torch.autograd.grad(_loss(o, S), leaves), torch.autograd.grad(_loss(r, Sr), leaves)
    for x, y in zip(got, want, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


@needs_kernel
@pytest.mark.parametrize("d_model", [32, 64])  # 64: the training shape's head sizes, the kernels' unrolled loops
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "rwkv7"])
def test_mixers_kernels_match_reference_path(name, dtype, d_model):
    """The training path on a CPU runs C kernels (the recurrence, the q/k normalization, the readout's norm and
    gate); its outputs and every parameter's and the input's gradients match the PyTorch reference path
    (kernel="reference"): to 1e-9 in float64, to fp32 rounding in float32."""
    torch.manual_seed(0)
    fast = registry.build(name, d_model=d_model).to(dtype)
    torch.manual_seed(0)
    ref = registry.build(name, d_model=d_model, kernel="reference").to(dtype)
    with torch.no_grad():  # non-trivial norm affines and bonus weights
        for m in (fast, ref):
            torch.manual_seed(1)
            for n, p in m.named_parameters():
                if "norm" in n or n == "r_k":
                    p.normal_()
    x = torch.randn(3, 45, d_model, dtype=dtype)
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_fast, y_ref = fast(x_fast), ref(x_ref)
    assert (fast.kernel, ref.kernel) == ("delta-rule-cpu", "reference")
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
