"""Training and evaluation of one model on one task.

AdamW with linear warmup and cosine decay, gradient clipping; every `eval_every`
steps the model is scored on the validation split, and training stops when
validation accuracy reaches `solved_accuracy` (Zoology and MAD stop at 0.99 and
0.999), when validation has not improved for `patience` evaluations (a plateau),
or at the step budget. The checkpoint with the best validation accuracy is kept
and only then scored on the test split, which nothing is selected on. The loss
and the accuracy count only scored positions (targets != -100), as in Zoology.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from tasks.base import IGNORE


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batch_size: int = 256
    solved_accuracy: float = 0.99  # early stop at or above this validation accuracy
    # stop after this many evaluations without a new best validation accuracy or a validation loss
    # `plateau_delta` (relative) below the best so far; 0 never stops on a plateau
    patience: int = 0
    plateau_delta: float = 0.01

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"train.{name}: must be a positive integer; got {value!r}")
        for name, lo in (("warmup_steps", 0), ("patience", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"train.{name}: must be an integer >= {lo}; got {value!r}")
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"train.{name}: must be a number > 0; got {value!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"train.weight_decay: must be a number >= 0; got {self.weight_decay!r}")
        if not 0 < self.solved_accuracy <= 1:
            raise ValueError(f"train.solved_accuracy: must be in (0, 1]; got {self.solved_accuracy!r}")
        if not 0 <= self.plateau_delta < 1:
            raise ValueError(f"train.plateau_delta: must be in [0, 1); got {self.plateau_delta!r}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)


def scored_logits(model: nn.Module, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The logits and targets of the scored positions only, `(n, vocab)` and `(n,)`: the backbone
    skips its last MLP and head elsewhere (same loss, ~30% fewer FLOPs on MQAR, where a few query
    positions per sequence are scored). On a GPU every position instead (the loss ignores the
    others): selecting a data-dependent number of rows would stall the host on the device each step."""
    if inputs.device.type != "cpu":
        return model(inputs), targets
    keep = targets != IGNORE
    return model(inputs, keep), targets[keep]


@torch.no_grad()
def evaluate(model: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int, device: torch.device) -> dict:
    """Accuracy over scored positions and mean loss on a held-out set."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, len(inputs), batch_size):
        x, y = inputs[start : start + batch_size].to(device), targets[start : start + batch_size].to(device)
        with autocast(device):
            logits, y = scored_logits(model, x, y)
        scored = y != IGNORE  # all of them on the CPU path; on a GPU the logits cover every position
        correct += (logits.argmax(-1) == y)[scored].sum().item()
        n = scored.sum().item()
        total += n
        loss_sum += loss_fn(logits, y).item() * n
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms, embeddings, or parameters a mixer marks (e.g.
    Mamba's A_log, D). The fused kernel where torch has one (CPU, CUDA): one call per step instead of
    ~10 small ops per parameter, 4x less optimizer time on the CPU presets' models."""

    def decays(name: str, p: torch.nn.Parameter) -> bool:
        return p.dim() >= 2 and "embed" not in name and not getattr(p, "_no_weight_decay", False)

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a CPU training step frees, for the next step to reuse.
    By default it returns large freed blocks to the OS (blocks of 128 KiB to 32 MiB are mmap'd and
    unmapped, and the heap is trimmed), so each step page-faults its activations back in, zeroed:
    ~3,400 faults per Mamba step at the CPU presets' shape, ~6,200 after other models ran in the
    same process. Blocks up to 32 MiB now come from the heap and stay there (the process keeps its
    peak footprint, at most a few hundred MB here). Returns whether it applied (glibc only)."""
    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


def train(
    model: nn.Module,
    train_set: tuple[Tensor, Tensor],
    val_set: tuple[Tensor, Tensor],
    test_set: tuple[Tensor, Tensor],
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    progress: bool = True,
    desc: str = "train",
    measure: Callable[[nn.Module], dict] | None = None,
) -> dict:
    """Train in place, selecting on `val_set`; returns the best checkpoint's validation and test
    metrics (the model is left at that checkpoint), why training stopped, and the history.

    `measure(model)`, if given, is recorded in the history at the 1st, 2nd, 4th, 8th, ...
    evaluation and at the last (e.g. ESS over training: a log-spaced record at a bounded cost).
    `seconds` splits the wall time into the training steps, the evaluations and `measure`."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    if device.type == "cpu":
        keep_freed_memory()

    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    inputs, targets = train_set
    history = []
    best = {"val_accuracy": -1.0, "val_loss": math.inf, "step": 0}
    best_state = copy.deepcopy(model.state_dict())
    best_loss, stale, stopped = math.inf, 0, "budget"
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    step = 0
    seconds = {"steps": 0.0, "evaluation": 0.0, "measure": 0.0}
    clock = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[part] += now - clock
        clock = now

    for step in bar:
        idx = torch.randint(len(inputs), (cfg.batch_size,), generator=gen)
        x, y = inputs[idx].to(device), targets[idx].to(device)
        with autocast(device):
            loss = loss_fn(*scored_logits(model, x, y))
        if not torch.isfinite(loss):
            raise DivergedError(f"loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
        opt.step()
        sched.step()
        lap("steps")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val = evaluate(model, *val_set, cfg.eval_batch_size, device)
            history.append(
                {"step": step + 1, "train_loss": loss.item(), "val_accuracy": val["accuracy"], "val_loss": val["loss"]}
            )
            lap("evaluation")
            if measure is not None and len(history) & (len(history) - 1) == 0:  # a power of two
                history[-1].update(measure(model))
                lap("measure")
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{val['accuracy']:.3f}")
            improved = val["accuracy"] > best["val_accuracy"]
            if improved:
                best = {"val_accuracy": val["accuracy"], "val_loss": val["loss"], "step": step + 1}
                best_state = copy.deepcopy(model.state_dict())
            if improved or val["loss"] < best_loss * (1 - cfg.plateau_delta):
                stale = 0
            else:
                stale += 1
            best_loss = min(best_loss, val["loss"])
            lap("evaluation")
            if val["accuracy"] >= cfg.solved_accuracy:
                stopped = "solved"
                break
            if cfg.patience and stale >= cfg.patience:
                stopped = "plateau"
                break
    bar.close()
    if measure is not None and history and len(history) & (len(history) - 1):  # the last, if not measured yet
        history[-1].update(measure(model))
        lap("measure")
    model.load_state_dict(best_state)
    test = evaluate(model, *test_set, cfg.eval_batch_size, device)
    lap("evaluation")
    return {
        "accuracy": test["accuracy"],
        "loss": test["loss"],
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "best_step": best["step"],
        "steps": step + 1,
        "stopped": stopped,
        "history": history,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
