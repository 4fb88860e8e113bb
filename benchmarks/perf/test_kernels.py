"""Per-mixer kernel micro-benchmarks (pytest-benchmark; `nox -s kernels`): forward and
forward+backward of every mixer at a fixed shape, on CUDA when present (bf16) else CPU (fp32)."""

import pytest
import torch

from architectures import registry
from benchmarks.train import keep_freed_memory

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
LENGTH = 4096 if DEVICE.type == "cuda" else 512
if DEVICE.type == "cpu":  # the allocator setting training and `benchmarks.throughput` run under
    keep_freed_memory()


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("name", registry.names())
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_mixer_kernel(benchmark, name, mode):
    torch.manual_seed(0)
    mixer = registry.build(name, d_model=64).to(DEVICE, DTYPE)
    x = torch.randn(4, LENGTH, 64, device=DEVICE, dtype=DTYPE, requires_grad=mode == "forward_backward")

    def run():
        if mode == "forward":
            with torch.no_grad():
                mixer(x)
        else:
            mixer(x).float().square().mean().backward()
        _sync()

    benchmark.group = f"{mode} L={LENGTH} {DEVICE.type}"
    benchmark.pedantic(run, warmup_rounds=1, rounds=5, iterations=1)
    benchmark.extra_info.update(kernel=mixer.kernel, device=str(DEVICE), tokens_per_s=4 * LENGTH / benchmark.stats.stats.median)
