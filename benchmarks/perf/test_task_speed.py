"""Task generation rate (pytest-benchmark; `nox -s perf`): examples per second at each task's
defaults, to compare with what training consumes (batch 32 x ~10-50 steps/s on a CPU)."""

import pytest

from tasks import registry

N = 4096


@pytest.mark.parametrize("name", registry.names())
def test_generation_rate(benchmark, name):
    task = registry.build(name)
    benchmark.group = "task generation"
    benchmark.pedantic(task.generate, args=(N, 0), rounds=3, iterations=1)
    rate = N / benchmark.stats.stats.median
    benchmark.extra_info.update(examples_per_s=rate, seq_len=task.seq_len)
    print(f"\n{name}: {rate:,.0f} examples/s (L={task.seq_len})")
