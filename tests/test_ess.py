"""ESS against ground truth: operators whose block ranks are known, and direct SVDs."""

import pytest
import torch

from benchmarks.ess import Semiseparable, effective_state_size, interior_window

torch.manual_seed(0)


def known_rank(length: int, order: int) -> torch.Tensor:
    i = torch.arange(length)
    return torch.minimum(torch.minimum(i, length - i), torch.tensor(order))


def lti_dense(length: int, order: int, seed: int = 0) -> torch.Tensor:
    """T[t, s] = C A^(t-s) B for a random order-n state-space system (non-diagonal A), float64."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(order, order, generator=g, dtype=torch.float64)
    A = 0.9 * A / torch.linalg.eigvals(A).abs().max()
    B, C = torch.randn(order, generator=g, dtype=torch.float64), torch.randn(order, generator=g, dtype=torch.float64)
    impulse = [C @ torch.linalg.matrix_power(A, k) @ B for k in range(length)]
    T = torch.zeros(length, length, dtype=torch.float64)
    for t in range(length):
        for s in range(t + 1):
            T[t, s] = impulse[t - s]
    return T


@pytest.mark.parametrize("order", [1, 3, 6])
def test_state_space_operator_has_ess_of_its_order(order):
    T = lti_dense(32, order, seed=order)
    assert torch.equal(effective_state_size(T), known_rank(32, order))


@pytest.mark.parametrize("order", [2, 5])
def test_diagonal_ssm_semiseparable_has_ess_of_its_order(order):
    length = 40
    decays = torch.linspace(0.5, 0.95, order)
    q = torch.randn(length, order).double()
    k = torch.randn(length, order).double()
    op = Semiseparable(q, k, decays.log().double().expand(length, order).clone())
    assert torch.equal(effective_state_size(op), known_rank(length, order))


@pytest.mark.parametrize("rank", [1, 4, 8])
def test_linear_attention_of_rank_r(rank):
    length = 48
    q, k = torch.randn(3, length, rank), torch.randn(3, length, rank)
    op = Semiseparable(q, k)
    expected = known_rank(length, rank).expand(3, length)
    assert torch.equal(effective_state_size(op), expected)
    assert torch.equal(effective_state_size(op.dense()), expected)


def naive(T, **tol):
    length = T.shape[-1]
    cols = [torch.zeros(T.shape[:-2], dtype=torch.long)]
    cols += [torch.linalg.matrix_rank(T[..., i:, :i], **tol) for i in range(1, length)]
    return torch.stack(cols, -1)


@pytest.mark.parametrize("tol", [{}, {"rtol": 1e-3}, {"atol": 0.5}, {"atol": 0.1, "rtol": 0.01}])
def test_tolerance_matches_matrix_rank_on_every_block(tol):
    op = Semiseparable(torch.randn(4, 32, 6), torch.randn(4, 32, 6), -torch.rand(4, 32, 6) * 0.5)
    T = op.dense()
    expected = naive(T, **tol)
    assert torch.equal(effective_state_size(T, **tol), expected)
    assert torch.equal(effective_state_size(op, **tol), expected)


def test_semiseparable_and_dense_agree_for_both_kinds():
    op = Semiseparable(torch.randn(2, 3, 40, 8), torch.randn(2, 3, 40, 8), -torch.rand(2, 3, 40, 8))
    T = op.dense()
    assert torch.equal(effective_state_size(op), effective_state_size(T))
    torch.testing.assert_close(effective_state_size(op, "entropy"), effective_state_size(T, "entropy"), rtol=1e-4, atol=1e-4)


def test_entropy_matches_direct_svd():
    T = torch.randn(2, 24, 24).tril()
    ess = effective_state_size(T, "entropy")
    for b in range(2):
        for i in range(1, 24):
            s = torch.linalg.svdvals(T[b, i:, :i])
            p = s / s.sum()
            assert ess[b, i].item() == pytest.approx(torch.exp(-(p * p.log()).sum()).item(), rel=1e-5)
    assert ess[:, 0].eq(0).all()


def test_entropy_of_zero_block_is_zero_and_of_rank_one_is_one():
    T = torch.zeros(10, 10)
    assert effective_state_size(T, "entropy").eq(0).all()
    op = Semiseparable(torch.ones(10, 1), torch.ones(10, 1))
    torch.testing.assert_close(effective_state_size(op, "entropy")[1:], torch.ones(9))


def test_entropy_is_differentiable():
    q = torch.randn(16, 4, requires_grad=True)
    k = torch.randn(16, 4)
    for op in (Semiseparable(q, k), Semiseparable(q, k).dense()):
        effective_state_size(op, "entropy").sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
        q.grad = None


def test_batch_dims_and_positions_are_kept():
    op = Semiseparable(torch.randn(2, 5, 30, 4), torch.randn(2, 5, 30, 4))
    full = effective_state_size(op)
    assert full.shape == (2, 5, 30)
    picked = effective_state_size(op, positions=[0, 7, 15, 29])
    assert torch.equal(picked, full[..., [0, 7, 15, 29]])
    assert torch.equal(effective_state_size(op.dense(), positions=[3, 20]), full[..., [3, 20]])


def test_apply_matches_dense_product():
    op = Semiseparable(torch.randn(3, 50, 7), torch.randn(3, 50, 7), -torch.rand(3, 50, 7))
    u = torch.randn(3, 50)
    torch.testing.assert_close(op.apply(u), (op.dense() @ u.unsqueeze(-1)).squeeze(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op @ u, op.apply(u))


def test_dense_matches_definition():
    q, k, ld = torch.randn(6, 2).double(), torch.randn(6, 2).double(), -torch.rand(6, 2).double()
    T = Semiseparable(q, k, ld).dense()
    for t in range(6):
        for s in range(6):
            want = sum(q[t, n] * k[s, n] * torch.exp(ld[s + 1 : t + 1, n].sum()) for n in range(2)) if s <= t else 0.0
            assert T[t, s].item() == pytest.approx(float(want), abs=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: effective_state_size(torch.randn(4, 5)), "square"),
        (lambda: effective_state_size(torch.randn(4)), "square"),
        (lambda: effective_state_size(torch.randn(4, 4), kind="nuclear"), "unknown ESS kind"),
        (lambda: effective_state_size([[1.0]]), "Tensor or a Semiseparable"),
        (lambda: effective_state_size(torch.ones(3, 3, dtype=torch.long)), "floating point"),
        (lambda: effective_state_size(torch.randn(4, 4), positions=[9]), "positions"),
        (lambda: Semiseparable(torch.randn(5, 2), torch.randn(5, 2), torch.rand(5, 2)), "<= 0"),
        (lambda: Semiseparable(torch.randn(5, 2), torch.randn(5, 3)), "shape"),
        (lambda: Semiseparable(torch.randn(5, 2), torch.randn(5, 2), -torch.rand(4, 2)), "shape"),
    ],
)
def test_bad_input_raises_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_interior_window():
    assert interior_window(64) == (16, 48)
    with pytest.raises(ValueError):
        interior_window(64, (0.8, 0.2))


def test_model_ess_of_shared_channels_equals_each_channel_measured_alone():
    from architectures.backbone import LanguageModel
    from benchmarks.ess import effective_state_size, model_ess

    for mixer in ("attention", "gla", "mamba", "lru"):
        torch.manual_seed(0)
        model = LanguageModel(64, mixer, d_model=16, n_layers=1, seq_len=24)
        tokens = torch.randint(0, 64, (2, 24))
        (layer,) = model_ess(model, tokens)
        captured = {}
        hook = model.mixers[0].register_forward_pre_hook(lambda m, a, c=captured: c.setdefault("x", a[0]))
        with torch.no_grad():
            model(tokens)
        hook.remove()
        matrix = model.mixers[0].operator(captured["x"]).matrix
        dense = matrix.dense() if hasattr(matrix, "dense") else matrix
        assert torch.equal(layer.tolerance, effective_state_size(dense).cpu()), mixer


@pytest.mark.parametrize("threads", [1, 2])
def test_single_precision_blocks_match_a_double_precision_svd(threads):
    """Float32 operators take the Gram path (eigenvalues of each block's smaller Gram matrix in float64,
    built by rank-one updates across splits; with 2 threads the solves are spread over a thread pool):
    its singular values must be those of a float64 SVD of every block, and its ranks those of
    matrix_rank, for full-rank, decaying and low-rank operators."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_gram_path_against_svd()
    finally:
        torch.set_num_threads(previous)
    assert torch.get_num_threads() == previous  # the pooled solver restores the thread count


def test_pooled_eigensolver_restores_more_threads_than_it_uses():
    """Fewer matrices than threads: the solver uses one worker per matrix and restores every thread."""
    from benchmarks.ess import _eigvalsh

    previous = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        gram = torch.eye(5, dtype=torch.float64).expand(2, 5, 5) * torch.tensor([1.0, 2.0]).view(2, 1, 1)
        torch.testing.assert_close(_eigvalsh(gram), torch.tensor([[1.0] * 5, [2.0] * 5], dtype=torch.float64))
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(previous)


def _check_gram_path_against_svd():
    from benchmarks.ess import _gram_singular_values

    g = torch.Generator().manual_seed(0)
    length = 24
    lag = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).float()
    u = torch.randn(length, 3, generator=g)
    ops = torch.stack(
        [
            torch.randn(length, length, generator=g).tril(),
            (torch.randn(length, length, generator=g) * (-lag.clamp_min(0)).exp()).tril(),  # decaying: tiny far blocks
            (u @ u.T).tril(-1),  # rank 3 below the diagonal
        ]
    )
    pos = list(range(length))
    sv = _gram_singular_values(ops, pos)
    for j, i in enumerate(pos[1:], start=1):
        exact = torch.linalg.svdvals(ops[:, i:, :i].double())
        torch.testing.assert_close(sv[:, j, : exact.shape[-1]], exact, rtol=1e-6, atol=1e-6 * exact.amax().item())
    ranks = effective_state_size(ops)
    for i in pos[1:]:
        float32_default = max(length - i, i) * torch.finfo(torch.float32).eps  # matrix_rank's rtol for these blocks
        assert torch.equal(ranks[:, i], torch.linalg.matrix_rank(ops[:, i:, :i].double(), rtol=float32_default))
    assert ranks[2].max() == 3


def _lru_of_rank(d_model=6, state_dim=5, rank=3, seed=0):
    """An LRU whose B reaches only `rank` of its complex modes: the MIMO blocks' real rank is 2 * rank
    (a mode's real and imaginary parts), whatever the number of channels."""
    from architectures.lru import LRU

    torch.manual_seed(seed)
    lru = LRU(d_model, state_dim=state_dim).double()
    with torch.no_grad():
        lru.B_re[rank:] = 0
        lru.B_im[rank:] = 0
    return lru


def test_mimo_ess_of_a_shared_state_is_the_rank_of_the_dense_multi_channel_block():
    from benchmarks.ess import mimo_ess, mimo_singular_values

    lru, length, d = _lru_of_rank(), 14, 6
    with torch.no_grad():
        decay, B, C = lru.state_space()
        sv = mimo_singular_values(decay, B, C, length)
        lag = torch.arange(length)[:, None] - torch.arange(length)[None, :]
        powers = decay[None, None, :] ** lag.clamp_min(0)[..., None]
        dense = torch.einsum("an,tsn,nb->tasb", C, powers, B).real * (lag >= 0)[:, None, :, None]
    for i in range(1, length):
        block = dense[i:, :, :i, :].reshape((length - i) * d, i * d)
        expected = torch.linalg.svdvals(block)
        assert torch.allclose(sv[i, : len(expected)], expected[: sv.shape[-1]], atol=1e-10), i
    ranks, _ = mimo_ess(sv, list(range(length)), length, d, torch.float64)
    # rank 2 * 3 = 6 once both sides of the split are long enough (i * d and (L - i) * d >= 6 at every i >= 1)
    assert ranks[0] == 0 and (ranks[1:] == 6).all()


def test_no_lru_layers_total_ess_exceeds_its_real_state():
    """Per-channel ESS summed over channels counts one shared state d_model times; the total recorded
    for a mixer that declares `shared_state` is the MIMO block's rank, at most 2 x state_dim."""
    from architectures.backbone import LanguageModel
    from benchmarks.ess import model_ess, summarize

    for d_model, state_dim in ((16, 4), (16, 16), (8, 24)):
        torch.manual_seed(0)
        model = LanguageModel(64, "lru", d_model=d_model, n_layers=2, seq_len=32, mixer_config={"state_dim": state_dim})
        layers = model_ess(model, torch.randint(0, 64, (2, 32)))
        summary = summarize(layers)
        for layer, lay in zip(layers, summary["per_layer"], strict=True):
            assert layer.total_state is not None and int(layer.total_state.max()) <= 2 * state_dim
            assert lay["shared_state"] and lay["ess_total_state"] <= 2 * state_dim
            assert all(v <= 2 * state_dim for v in lay["ess_total_state_by_tolerance"].values())
        assert summary["ess_total_state"] <= 2 * 2 * state_dim
        if d_model * 2 > state_dim:  # the per-channel sum overcounts the shared state
            assert summary["ess_total"] > summary["ess_total_state"]
    # channels with separate states: the total is the per-channel sum, as before
    torch.manual_seed(0)
    gla = summarize(model_ess(LanguageModel(64, "gla", d_model=16, n_layers=1, seq_len=32), torch.randint(0, 64, (2, 32))))
    assert gla["ess_total_state"] == gla["ess_total"] and not gla["per_layer"][0]["shared_state"]
