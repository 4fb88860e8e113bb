"""One training step of the suite's model, as `benchmarks.train` takes it, for the training-speed
benchmarks: `nox -s perf -- -k train_step` (pytest-benchmark) and `compare_train_step.py` (this
checkout against another, interleaved).

The shape is the CPU presets': Zoology's 2-block model (`backbone="zoology"`: a BaseConv layer ahead of
a mixer without its own convolution, no MLP), d_model 64, vocabulary 256, L 64, batch 32,
fp32, on MQAR batches with 8 kv pairs (the published sweep's middle setting: 8 of the 64 positions
are scored). This module imports only what every version of the suite has (the backbone, the loss,
the task registry), so the comparison script can load it against an older checkout, and it takes
each checkout's own training loss (`scored_logits` where the checkout has it).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from architectures.backbone import LanguageModel
from benchmarks.train import loss_fn
from tasks import registry as tasks

try:  # the optimizer and clipping of the checkout this module runs against
    from benchmarks.train import make_optimizer
except ImportError:  # versions before make_optimizer: plain AdamW, default clipping
    make_optimizer = None
CLIP = {"foreach": True} if make_optimizer else {}
try:  # malloc keeps freed activations for the next step, as `benchmarks.train.train` sets it on CPU
    from benchmarks.train import keep_freed_memory
except ImportError:  # versions before it: glibc's defaults

    def keep_freed_memory() -> bool:
        return False


try:  # the last MLP and the head only at scored positions
    from benchmarks.train import scored_logits
except ImportError:  # versions before it: logits everywhere, ignored positions masked in the loss

    def scored_logits(model, x, y):
        return model(x), y


SHAPE = {"d_model": 64, "vocab_size": 256, "seq_len": 64, "batch": 32, "n_layers": 2, "num_kv_pairs": 8, "backbone": "zoology"}
MATMUL_SIZE = 1024  # square fp32 GEMM whose rate is the reference "matmul rate" of the machine


def optimizer_for(model) -> torch.optim.Optimizer:
    """The optimizer `benchmarks.train` builds in the checkout this module runs against (plain AdamW in
    versions that predate `make_optimizer`), so a comparison times each version's own step."""
    if make_optimizer is None:
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    return make_optimizer(model, 1e-3, 0.1, torch.device("cpu"))


def build(mixer: str, seed: int = 0, **shape):
    """(model, optimizer, inputs, targets) of the training step."""
    s = {**SHAPE, **shape}
    keep_freed_memory()
    torch.manual_seed(seed)
    model = LanguageModel(
        s["vocab_size"], mixer, d_model=s["d_model"], n_layers=s["n_layers"], seq_len=s["seq_len"], backbone=s["backbone"]
    )
    opt = optimizer_for(model)
    task = tasks.build("mqar", vocab_size=s["vocab_size"], seq_len=s["seq_len"], num_kv_pairs=s["num_kv_pairs"])
    x, y = task.generate(s["batch"], seed=seed)
    return model.train(), opt, x, y


def step(model, opt, x, y) -> float:
    """Forward, loss, backward, clipping and AdamW: one step of `benchmarks.train.train`."""
    loss = loss_fn(*scored_logits(model, x, y))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, **CLIP)
    opt.step()
    return loss.item()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(model, opt, x, y, min_seconds: float = 1.0, min_steps: int = 5, clock: str = "wall") -> list[float]:
    """Seconds per step of at least `min_steps` steps and `min_seconds` in all (after one warm-up).
    `clock="cpu"`: the process's CPU seconds instead of wall seconds, which time spent waiting for a
    core another process holds does not inflate (on a shared machine; at one thread it is the step's
    own time)."""
    now = CLOCKS[clock]
    step(model, opt, x, y)
    times: list[float] = []
    while len(times) < min_steps or sum(times) < min_seconds:
        start = now()
        step(model, opt, x, y)
        times.append(now() - start)
    return times


def flops_per_step(mixer: str, **shape) -> int:
    """Matmul-type FLOPs of one step (forward and backward) as torch's FlopCounterMode counts them."""
    model, opt, x, y = build(mixer, **shape)
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(*scored_logits(model, x, y)).backward()
    return counter.get_total_flops()


def matmul_rate(size: int = MATMUL_SIZE, min_seconds: float = 0.5) -> float:
    """FLOP/s of a square fp32 matmul on this machine with the current thread count (median)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times: list[float] = []
    while len(times) < 5 or sum(times) < min_seconds:
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    times.sort()
    return 2 * size**3 / times[len(times) // 2]
