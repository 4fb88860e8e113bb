"""ESS speed (pytest-benchmark; run with `nox -s perf`). Not part of the test suite.

- factored: Semiseparable with 64 channels, N = 16, L = 1024, all splits, against the naive loop
  of torch.linalg.matrix_rank over the dense blocks of the same operator;
- dense: effective_state_size on a dense (64, 256, 256) operator against the same naive loop.
Both check that the ranks are identical.
"""

import statistics
import time

import pytest
import torch

from benchmarks.ess import Semiseparable, _eigvalsh, effective_state_size


def naive_ranks(T: torch.Tensor, positions) -> torch.Tensor:
    return torch.stack(
        [torch.linalg.matrix_rank(T[..., i:, :i]) if i else torch.zeros(T.shape[:-2], dtype=torch.long) for i in positions], -1
    )


def _timed(fn, repeats=1):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def test_factored_vs_naive(benchmark, request):
    torch.manual_seed(0)
    channels, state, length = 64, 16, 1024
    op = Semiseparable(
        torch.randn(channels, length, state), torch.randn(channels, length, state), -0.05 * torch.rand(channels, length, state)
    )
    ess = benchmark.pedantic(effective_state_size, args=(op,), rounds=3, iterations=1)
    stride = request.config.getoption("--naive-stride")
    positions = list(range(0, length, stride))
    T = op.dense()
    naive_sample_s, ranks = _timed(lambda: naive_ranks(T, positions))
    naive_s = naive_sample_s * length / len(positions)
    factored_s = benchmark.stats.stats.median
    speedup = naive_s / factored_s
    benchmark.extra_info.update(naive_seconds=naive_s, naive_stride=stride, factored_seconds=factored_s, speedup=speedup)
    print(f"\nfactored {factored_s:.2f}s, naive {naive_s:.1f}s (stride {stride}), speedup {speedup:.0f}x")
    assert torch.equal(ess[:, positions], ranks)
    assert speedup >= 50


def test_dense_vs_naive(benchmark):
    torch.manual_seed(0)
    channels, state, length = 64, 16, 256
    T = Semiseparable(
        torch.randn(channels, length, state), torch.randn(channels, length, state), -0.05 * torch.rand(channels, length, state)
    ).dense()
    ess = benchmark.pedantic(effective_state_size, args=(T,), rounds=3, iterations=1)
    naive_s, ranks = _timed(lambda: naive_ranks(T, range(length)), repeats=3)
    dense_s = benchmark.stats.stats.median
    benchmark.extra_info.update(naive_seconds=naive_s, dense_seconds=dense_s, ratio=naive_s / dense_s)
    print(f"\ndense {dense_s:.2f}s, naive {naive_s:.2f}s, naive/dense {naive_s / dense_s:.2f}")
    assert torch.equal(ess, ranks)
    assert dense_s <= naive_s * 1.05  # no slower (5% timing noise allowed)


@pytest.mark.parametrize("solver", ["1 thread", "2 threads inside MKL", "2 threads, one slice each"])
def test_eigensolver_threads(benchmark, solver):
    """The dense path's floor: float64 eigenvalues of 256 Gram matrices of 128 x 128 (Hyena's
    middle splits at L 256), on one thread, on two threads that MKL uses inside each solve, or on
    two threads each solving half of the batch (`benchmarks.ess._eigvalsh`, what the dense path does)."""
    torch.manual_seed(0)
    a = torch.randn(256, 128, 128, dtype=torch.float64)
    gram = a @ a.mT
    threads, solve = {
        "1 thread": (1, torch.linalg.eigvalsh),
        "2 threads inside MKL": (2, torch.linalg.eigvalsh),
        "2 threads, one slice each": (2, _eigvalsh),
    }[solver]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark.group = "eigensolver threads"
        benchmark.pedantic(solve, args=(gram,), rounds=7, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(previous)
