"""Training and evaluation of one model on one task.

AdamW with linear warmup and cosine decay, gradient clipping, evaluation on
held-out examples, early stop once the task is solved. The loss and the
accuracy count only scored positions (targets != -100), as in Zoology.
"""

from __future__ import annotations

import contextlib
import math
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
    solved_accuracy: float = 0.99  # early stop at or above this test accuracy

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train: `{name}` must be a positive integer; got {value!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError(
                f"train: need lr > 0, warmup_steps >= 0, grad_clip > 0; got {self.lr}, {self.warmup_steps}, {self.grad_clip}"
            )


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
            logits = model(x)
        scored = y != IGNORE
        correct += (logits.argmax(-1)[scored] == y[scored]).sum().item()
        n = scored.sum().item()
        total += n
        loss_sum += loss_fn(logits, y).item() * n
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}


def train(
    model: nn.Module,
    train_set: tuple[Tensor, Tensor],
    test_set: tuple[Tensor, Tensor],
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    progress: bool = True,
    desc: str = "train",
) -> dict:
    """Train in place; returns the final test metrics and the training history."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()

    # no weight decay on biases, norms, embeddings, or parameters a mixer marks (e.g. Mamba's A_log, D)
    def decays(name: str, p: torch.nn.Parameter) -> bool:
        return p.dim() >= 2 and "embed" not in name and not getattr(p, "_no_weight_decay", False)

    decay = [p for n, p in model.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not decays(n, p)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    inputs, targets = train_set
    history = []
    metrics = {"accuracy": 0.0, "loss": float("nan")}
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    step = 0
    for step in bar:
        idx = torch.randint(len(inputs), (cfg.batch_size,), generator=gen)
        x, y = inputs[idx].to(device), targets[idx].to(device)
        with autocast(device):
            loss = loss_fn(model(x), y)
        if not torch.isfinite(loss):
            raise DivergedError(f"loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            metrics = evaluate(model, *test_set, cfg.eval_batch_size, device)
            history.append({"step": step + 1, "train_loss": loss.item(), **metrics})
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{metrics['accuracy']:.3f}")
            if metrics["accuracy"] >= cfg.solved_accuracy:
                break
    bar.close()
    return {**metrics, "steps": step + 1, "history": history}
