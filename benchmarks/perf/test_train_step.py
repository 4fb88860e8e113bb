"""Training-step speed per mixer (pytest-benchmark; `nox -s perf -- -k train_step`), with the share
of this machine's fp32 matmul rate each step reaches, measured in the same run.

The shape is the CPU presets' (benchmarks/perf/train_step.py). `python -m benchmarks.perf.train_table
.benchmarks/perf.json` turns the results into the README's table.
"""

import pytest
import torch

from architectures import registry
from benchmarks.perf import train_step

THREADS = 2


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def test_train_step_matmul_rate(benchmark):
    """The reference rate: a square fp32 GEMM of size MATMUL_SIZE."""
    size = train_step.MATMUL_SIZE
    a, b = torch.randn(size, size), torch.randn(size, size)
    benchmark.group = "train step"
    benchmark.pedantic(lambda: a @ b, warmup_rounds=2, rounds=20, iterations=1)
    benchmark.extra_info.update(flops=2 * size**3, threads=THREADS)


@pytest.mark.parametrize("name", registry.names())
def test_train_step(benchmark, name):
    model, opt, x, y = train_step.build(name)
    for _ in range(2):  # warm-up: first-call kernel probes, allocator
        train_step.step(model, opt, x, y)
    benchmark.group = "train step"
    benchmark.pedantic(train_step.step, args=(model, opt, x, y), rounds=15, iterations=1)
    benchmark.extra_info.update(flops=train_step.flops_per_step(name), threads=THREADS, **train_step.SHAPE)


@pytest.mark.parametrize("variant", ["for-loop", "foreach", "fused"])
def test_train_step_optimizer(benchmark, variant):
    """AdamW alone on the attention model's parameters (the fused kernel is what training uses:
    benchmarks.train.make_optimizer), at 1 thread as the sweep's workers run."""
    torch.set_num_threads(1)  # the autouse fixture restores the count afterwards
    model, _, _, _ = train_step.build("attention")
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    kwargs = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[variant]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, **kwargs)
    benchmark.group = "optimizer step"
    benchmark.pedantic(opt.step, warmup_rounds=3, rounds=50, iterations=1)
