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

from tasks.base import IGNORE, row_hash


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = 1000  # the hard cap on a run's steps (before a WSD cooldown)
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
    # the plateau window in steps instead (0: `patience` in evaluations): a run stops when it has made no
    # progress for max(patience_steps, patience_fraction x its steps so far), a window that grows with
    # the run, so that it outlasts MQAR's flat phase before the transition at every length
    patience_steps: int = 0
    patience_fraction: float = 0.0
    # "cosine": warmup, then cosine decay to 0 at `steps`; "wsd": warmup-stable-decay (Haegele et al.
    # 2024, arXiv 2405.18392): constant after warmup, so a run can be continued, and a linear decay to 0
    # over `cooldown` x its steps once it ends (on a copy: the run can still be continued afterwards)
    schedule: str = "cosine"
    cooldown: float = 0.1
    # successive halving over the learning-rate grid (benchmarks/halving.py): the step budgets at which
    # every rate still training is ranked on validation and the best 1/promote of them go on; the cap
    # is `steps`. None: each rate trains alone to its stop.
    rungs: list[int] | None = None
    promote: int = 2
    extend: int = 0  # times the grid may be extended past an edge that wins (benchmarks/halving.py)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"train.{name}: must be a positive integer; got {value!r}")
        for name, lo in (("warmup_steps", 0), ("patience", 0), ("patience_steps", 0), ("promote", 2), ("extend", 0)):
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
        if not 0 <= self.patience_fraction < 1:
            raise ValueError(f"train.patience_fraction: must be in [0, 1); got {self.patience_fraction!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if not 0 <= self.cooldown < 1:
            raise ValueError(f"train.cooldown: must be in [0, 1); got {self.cooldown!r}")
        if self.rungs is not None:
            rungs = list(self.rungs)
            if not rungs or any(not isinstance(r, int) or isinstance(r, bool) for r in rungs) or rungs != sorted(set(rungs)):
                raise ValueError(f"train.rungs: must be increasing step counts, e.g. [1000,3000]; got {self.rungs!r}")
            if rungs[0] < 1 or rungs[-1] >= self.steps:
                raise ValueError(f"train.rungs: each must be in [1, train.steps={self.steps}); got {self.rungs!r}")
            if self.schedule != "wsd":
                raise ValueError("train.rungs: successive halving continues runs, which needs train.schedule=wsd")
            self.rungs = rungs


SCHEDULES = ("cosine", "wsd")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning rate of step `step` (0-based) over cfg.lr, before any WSD cooldown."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        return 1.0
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


class TrainData:
    """Where a run's training batches come from: a fixed training set, sampled with replacement (a
    generator the trainer keeps), or, with `task`, fresh examples every step (`Task.stream_batch`), none
    of which is in the validation or test sets (`exclude`: their rows' hashes). Fresh examples cannot be
    memorized, and the batch of a step is a function of the step alone."""

    def __init__(self, fixed: tuple[Tensor, Tensor] | None = None, task=None, seed: int = 0, exclude: set[bytes] = frozenset()):
        if (fixed is None) == (task is None):
            raise ValueError("TrainData: give a fixed training set or a task to draw fresh examples from")
        self.fixed, self.task, self.seed, self.exclude = fixed, task, seed, exclude

    @property
    def size(self) -> int | None:
        """Examples in the fixed set; None for fresh examples."""
        return None if self.fixed is None else len(self.fixed[0])

    def batch(self, step: int, batch_size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.fixed is not None:
            idx = torch.randint(len(self.fixed[0]), (batch_size,), generator=gen)
            return self.fixed[0][idx], self.fixed[1][idx]
        x, y = self.task.stream_batch(batch_size, self.seed, step)
        if self.exclude:
            keep = torch.tensor([h not in self.exclude for h in map(row_hash, x.numpy())], dtype=torch.bool)
            x, y = x[keep], y[keep]
        return x, y


class Trainer:
    """One run in training: its model, optimizer, step, validation history and best checkpoint.

    `advance(until)` trains up to step `until` or an earlier stop (solved, a plateau, the cap) and says
    why it stopped (None: paused at `until`, to be continued); `finish(test_set)` ends it: under the
    WSD schedule the cooldown (on the side: the run can still be continued afterwards), then the best
    checkpoint on validation scored on the test split, which nothing is selected on. `state_dict` /
    `load_state_dict` save and restore all of it, so that a run continued from a checkpoint equals one
    that trained straight through (tests/test_protocol.py).

    `measure(model)`, if given, is recorded in the history at the 1st, 2nd, 4th, 8th, ... evaluation and
    at the last (e.g. ESS over training: a log-spaced record at a bounded cost)."""

    def __init__(
        self,
        model: nn.Module,
        data: TrainData,
        val_set: tuple[Tensor, Tensor],
        cfg: TrainConfig,
        device: torch.device,
        seed: int,
        progress: bool = True,
        desc: str = "train",
        measure: Callable[[nn.Module], dict] | None = None,
    ):
        self.model, self.data, self.val_set, self.cfg, self.device = model, data, val_set, cfg, device
        self.progress, self.desc, self.measure = progress, desc, measure
        model.to(device).train()
        if device.type == "cpu":
            keep_freed_memory()
        self.opt = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
        self.gen = torch.Generator().manual_seed(seed)
        self.step = 0
        self.sequences = 0  # training examples seen
        self.history: list[dict] = []
        self.best = {"val_accuracy": -1.0, "val_loss": math.inf, "step": 0}
        self.best_state = copy.deepcopy(model.state_dict())
        self.best_loss = math.inf  # the validation loss at the last progress
        self.last_progress = 0  # step of the last evaluation that made progress
        self.stale = 0  # evaluations since then
        self.stopped: str | None = None  # "solved" | "plateau" | "budget" once the run is over
        self.seconds = {"steps": 0.0, "evaluation": 0.0, "measure": 0.0}
        self._loss_sum, self._loss_n = 0.0, 0  # training loss since the last evaluation
        self._main: dict | None = None  # the run's state before `finish`, restored to continue it
        # who trained the steps of a state this run resumed from, opaque here (`benchmarks.run`'s
        # stretches); a state saved before they were kept gives one stretch that names no one
        self.trained_by: list[dict] = []

    # ------------------------------------------------------------------ training

    def _lap(self, part: str, clock: float) -> float:
        now = time.perf_counter()
        self.seconds[part] += now - clock
        return now

    def _train_step(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        x, y = self.data.batch(self.step, self.cfg.batch_size, self.gen)
        x, y = x.to(self.device), y.to(self.device)
        with autocast(self.device):
            loss = loss_fn(*scored_logits(self.model, x, y))
        if not torch.isfinite(loss):
            raise DivergedError(f"loss became {loss.item()} at step {self.step}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip, foreach=True)
        self.opt.step()
        self.step += 1
        self.sequences += len(x)
        self._loss_sum += loss.item()
        self._loss_n += 1

    def _evaluate(self, phase: str = "train") -> dict:
        """Score validation, log it; returns the entry (with `improved` and `progress` flags, not logged)."""
        val = evaluate(self.model, *self.val_set, self.cfg.eval_batch_size, self.device)
        entry = {
            "step": self.step,
            "sequences": self.sequences,
            "train_loss": self._loss_sum / max(self._loss_n, 1),
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
        }
        if phase != "train":
            entry["phase"] = phase
        self._loss_sum, self._loss_n = 0.0, 0
        self.history.append(entry)
        return entry

    def _measure_if_due(self, entry: dict, clock: float, last: bool = False) -> float:
        n = len(self.history)
        if self.measure is not None and (n & (n - 1) == 0 or last) and "ess" not in entry:
            entry.update(self.measure(self.model))
            clock = self._lap("measure", clock)
        return clock

    def advance(self, until: int) -> str | None:
        """Train to step `until` (at most the cap, `cfg.steps`) or an earlier stop; returns why the run
        stopped, or None if it paused at `until` and can go on."""
        cfg = self.cfg
        if self.stopped is not None:
            return self.stopped
        if self._main is not None:  # finished before: continue from where the cooldown branched off
            seconds = self.seconds
            self.load_state_dict(self._main)
            self.seconds = seconds
        until = min(until, cfg.steps)
        bar = tqdm(total=until, initial=self.step, desc=self.desc, disable=not self.progress, leave=False, dynamic_ncols=True)
        clock = time.perf_counter()
        while self.step < until:
            self._train_step(cfg.lr * lr_factor(self.step, cfg))
            bar.update()
            clock = self._lap("steps", clock)
            if self.step % cfg.eval_every and self.step != until:
                continue
            entry = self._evaluate()
            clock = self._lap("evaluation", clock)
            clock = self._measure_if_due(entry, clock)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val=f"{entry['val_accuracy']:.3f}")
            self._track(entry)
            if entry["val_accuracy"] >= cfg.solved_accuracy:
                self.stopped = "solved"
            elif self._plateaued():
                self.stopped = "plateau"
            clock = self._lap("evaluation", clock)
            if self.stopped:
                break
        bar.close()
        if self.stopped is None and self.step >= cfg.steps:
            self.stopped = "budget"
        return self.stopped

    def _track(self, entry: dict) -> None:
        improved = entry["val_accuracy"] > self.best["val_accuracy"]
        if improved:
            self.best = {"val_accuracy": entry["val_accuracy"], "val_loss": entry["val_loss"], "step": self.step}
            self.best_state = copy.deepcopy(self.model.state_dict())
        if improved or entry["val_loss"] < self.best_loss * (1 - self.cfg.plateau_delta):
            self.last_progress, self.stale = self.step, 0
            # the loss to beat is the one at the last progress, not each new minimum: a loss falling
            # steadily by less than `plateau_delta` an evaluation still makes progress every few
            self.best_loss = min(self.best_loss, entry["val_loss"])
        else:
            self.stale += 1

    def _plateaued(self) -> bool:
        cfg = self.cfg
        if cfg.patience_steps:
            window = max(cfg.patience_steps, cfg.patience_fraction * self.step)
            return self.step - self.last_progress >= window
        return bool(cfg.patience) and self.stale >= cfg.patience

    # ------------------------------------------------------------------ ending a run

    def finish(self, test_set: tuple[Tensor, Tensor], stopped: str | None = None) -> dict:
        """End the run (`stopped` names why when the caller ends it, e.g. "pruned" by successive
        halving): the WSD cooldown if the schedule has one and the run is not solved, then the best
        checkpoint's validation and test metrics, the model left at that checkpoint. The run's state
        before the cooldown is kept (`state_dict`), so `advance` can continue it."""
        cfg = self.cfg
        self._main = self.state_dict()
        stopped = self.stopped or stopped or "budget"
        clock = time.perf_counter()
        main_steps = self.step
        if cfg.schedule == "wsd" and cfg.cooldown > 0 and stopped != "solved":
            n = max(1, round(cfg.cooldown * main_steps))
            for i in range(n):
                self._train_step(cfg.lr * (n - i) / n)
                clock = self._lap("steps", clock)
                if (i + 1) % cfg.eval_every and i + 1 != n:
                    continue
                entry = self._evaluate("cooldown")
                clock = self._lap("evaluation", clock)
                self._track(entry)
                if entry["val_accuracy"] >= cfg.solved_accuracy:
                    stopped = "solved"
                    break
        if self.history:
            clock = self._measure_if_due(self.history[-1], clock, last=True)
        self.model.load_state_dict(self.best_state)
        test = evaluate(self.model, *test_set, cfg.eval_batch_size, self.device)
        clock = self._lap("evaluation", clock)
        last = self.history[-1] if self.history else {}
        result = {
            "accuracy": test["accuracy"],
            "loss": test["loss"],
            "val_accuracy": self.best["val_accuracy"],
            "val_loss": self.best["val_loss"],
            "best_step": self.best["step"],
            "steps": self.step,
            "main_steps": main_steps,
            "sequences": self.sequences,
            "train_set": self.data.size,
            "final_train_loss": last.get("train_loss"),
            "final_val_loss": last.get("val_loss"),
            "stopped": stopped,
            "history": copy.deepcopy(self.history),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }
        return result

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything `load_state_dict` needs to continue the run; after `finish`, the run as it was
        before its cooldown."""
        if self._main is not None:
            return {**self._main, "seconds": dict(self.seconds)}
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.opt.state_dict()),
            "generator": self.gen.get_state(),
            "step": self.step,
            "sequences": self.sequences,
            "history": copy.deepcopy(self.history),
            "best": dict(self.best),
            "best_state": copy.deepcopy(self.best_state),
            "best_loss": self.best_loss,
            "last_progress": self.last_progress,
            "stale": self.stale,
            "stopped": self.stopped,
            "seconds": dict(self.seconds),
            "loss_since_eval": (self._loss_sum, self._loss_n),
            "trained_by": copy.deepcopy(self.trained_by),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.step, self.sequences = state["step"], state["sequences"]
        self.history = copy.deepcopy(state["history"])
        self.best, self.best_state = dict(state["best"]), copy.deepcopy(state["best_state"])
        self.best_loss, self.last_progress, self.stale = state["best_loss"], state["last_progress"], state["stale"]
        self.stopped, self.seconds = state["stopped"], dict(state["seconds"])
        self._loss_sum, self._loss_n = state["loss_since_eval"]
        self.trained_by = copy.deepcopy(state["trained_by"]) if "trained_by" in state else [{"until": state["step"]}]
        self._main = None


def train(
    model: nn.Module,
    train_set: tuple[Tensor, Tensor] | TrainData,
    val_set: tuple[Tensor, Tensor],
    test_set: tuple[Tensor, Tensor],
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    progress: bool = True,
    desc: str = "train",
    measure: Callable[[nn.Module], dict] | None = None,
) -> dict:
    """Train one run to its stop (solved, a plateau, the cap) and finish it (`Trainer`); returns the best
    checkpoint's validation and test metrics (the model is left at that checkpoint), why training
    stopped, and the history. `seconds` splits the wall time into the training steps, the evaluations
    and `measure`."""
    data = train_set if isinstance(train_set, TrainData) else TrainData(train_set)
    trainer = Trainer(model, data, val_set, cfg, device, seed, progress, desc, measure)
    trainer.advance(cfg.steps)
    return trainer.finish(test_set)
