"""What every task provides, and the checks shared by the generators."""

from __future__ import annotations

import hashlib
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

IGNORE = -100  # target of every position that is not scored
CHUNK = 1024  # examples generated per random stream: results do not depend on memory or batch size
STREAM_TAG = 0x5EED  # the fresh training batches' streams (`Task.stream_batch`), apart from generate's


def require_int(task: str, lo: int = 1, **params) -> None:
    for name, value in params.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
            raise ValueError(f"{task}: `{name}` must be an integer >= {lo}; got {value!r}")


class Splits(NamedTuple):
    """Train, validation and test sets, each `(inputs, targets)`."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


class Task:
    """A synthetic sequence task.

    `generate(num_examples, seed) -> (inputs, targets)`: LongTensors `(num_examples, seq_len)`,
    `targets[b, t]` the token the model must output at position t, -100 where nothing is scored.
    Class attributes: `ladder` (difficulty levels, easiest first, as parameter overrides),
    `source` (the definition followed), `no_recall_rule` (what the no-recall baseline guesses).
    Properties: `memory_demand` (items to hold per example) and `chance_accuracy`;
    `no_recall_accuracy(inputs, targets)` scores the no-recall baseline on a split.
    """

    name: ClassVar[str] = "task"
    source: ClassVar[str] = ""
    ladder: ClassVar[list[dict]] = []
    no_recall_rule: ClassVar[str] = "the most frequent target of the split"
    # the reference suite's backbone (`model.backbone=auto` takes it) and the model it trains
    backbone: ClassVar[str] = "mad"
    model: ClassVar[str] = "language_model"  # or "autoencoder" (MAD's compression)
    vocab_size: int
    seq_len: int

    def params(self) -> dict:
        raise NotImplementedError

    @property
    def memory_demand(self) -> int:
        raise NotImplementedError

    @property
    def chance_accuracy(self) -> float:
        raise NotImplementedError

    def no_recall_accuracy(self, inputs: Tensor, targets: Tensor) -> float:
        """Expected accuracy of the best guess that uses no key -> value association (`no_recall_rule`).

        A model at or below it has learned token statistics, not recall. The base rule is the best
        constant answer; recall tasks override it with a guess from the tokens seen so far.
        """
        y = targets.numpy()
        scored = y[y != IGNORE]
        return float(np.bincount(scored).max() / len(scored)) if len(scored) else float("nan")

    def _generate_chunk(self, rng: np.random.Generator, n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def generate(self, num_examples: int, seed: int, split: str = "train") -> tuple[Tensor, Tensor]:
        """Deterministic: the same parameters and seed give byte-identical tensors on any machine.

        `split="test"` selects a task's test distribution where it has one (MAD's fuzzy recall
        probes test sequences with full-length keys only); elsewhere both splits are alike.
        """
        if split not in ("train", "test"):
            raise ValueError(f"{self.name}: `split` must be 'train' or 'test'; got {split!r}")
        require_int(self.name, lo=0, num_examples=num_examples)
        require_int(self.name, lo=0, seed=seed)
        inputs, targets = [], []
        for chunk, start in enumerate(range(0, num_examples, CHUNK)):
            # PCG64 seeded through SeedSequence: platform independent, one stream per chunk
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, chunk])))
            x, y = self._generate_chunk(rng, min(CHUNK, num_examples - start), split)
            inputs.append(x)
            targets.append(y)
        if not inputs:
            empty = torch.empty(0, self.seq_len, dtype=torch.long)
            return empty, empty.clone()
        return torch.from_numpy(np.concatenate(inputs).astype(np.int64)), torch.from_numpy(
            np.concatenate(targets).astype(np.int64)
        )

    def stream_batch(self, num_examples: int, seed: int, step: int) -> tuple[Tensor, Tensor]:
        """Fresh training examples for step `step` of a run seeded `seed`: a random stream of their own
        (apart from `generate`'s, so never the validation or test sets' draws), the same on any
        machine, and a function of the step alone, so a run continued from a checkpoint sees the
        batches a run trained straight through saw."""
        require_int(self.name, lo=0, num_examples=num_examples, seed=seed, step=step)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step, STREAM_TAG])))
        x, y = self._generate_chunk(rng, num_examples, "train")
        return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))

    def splits(self, num_train: int | None, num_val: int, num_test: int, seed: int) -> Splits:
        """Train, validation and test sets from separate seeds. Validation selects (learning rate,
        checkpoint, early stop) and test only reports, so both follow the test distribution.
        Train examples that also occur in validation or test are dropped. `num_train=None`: no fixed
        training set (training draws fresh batches, `stream_batch`); the split's train is empty."""
        require_int(self.name, num_val=num_val, num_test=num_test)
        test = self.generate(num_test, 3 * seed + 1, split="test")
        val = self.generate(num_val, 3 * seed + 2, split="test")
        if num_train is None:
            return Splits(self.generate(0, 3 * seed), val, test)
        require_int(self.name, num_train=num_train)
        train = self.generate(num_train, 3 * seed, split="train")
        seen = {row_hash(row) for row in torch.cat([test[0], val[0]]).numpy()}
        keep = torch.tensor([row_hash(row) not in seen for row in train[0].numpy()], dtype=torch.bool)
        return Splits((train[0][keep], train[1][keep]), val, test)


def running_mode_accuracy(inputs: Tensor, targets: Tensor, counted: np.ndarray, causal: bool = True) -> float:
    """Expected accuracy of guessing, at every scored position, uniformly among the most frequent
    `counted` tokens seen so far (`causal=False`: in the whole sequence). `counted` is a boolean
    `(n, L)` mask of the tokens that enter the counts. Where nothing was counted yet, the guess is
    uniform over the whole vocabulary."""
    x, y = inputs.numpy(), targets.numpy()
    n, length = x.shape
    vocab = int(max(x.max(), y.max())) + 1
    counts = np.zeros((n, vocab), dtype=np.int64)
    rows = np.arange(n)
    if not causal:
        np.add.at(counts, (np.nonzero(counted)[0], x[counted]), 1)
    total, hits = 0, 0.0
    for t in range(length):
        scored = y[:, t] != IGNORE
        if scored.any():
            c = counts[scored]
            top = c.max(axis=1, keepdims=True)
            modes = (c == top).sum(axis=1)  # ties: a uniform guess among the modes
            is_mode = c[np.arange(len(c)), y[scored, t]] == top[:, 0]
            hits += float(np.where(top[:, 0] > 0, is_mode / modes, 1.0 / vocab).sum())
            total += int(scored.sum())
        if causal:
            counts[rows[counted[:, t]], x[counted[:, t], t]] += 1
    return hits / total if total else float("nan")


def row_hashes(inputs: Tensor) -> set[bytes]:
    """Hashes of the rows of `inputs`, to keep examples of one split out of another."""
    return {row_hash(row) for row in inputs.numpy()}


def row_hash(row: np.ndarray) -> bytes:
    return hashlib.blake2b(row.tobytes(), digest_size=16).digest()


def sample_without_replacement(rng: np.random.Generator, n: int, population: int, k: int, log_weights=None) -> np.ndarray:
    """`(n, k)` indices into range(population), distinct per row, in the order sequential sampling draws them.

    With `log_weights` the draw is proportional to the weights without replacement
    (Gumbel top-k, equivalent to numpy's `choice(replace=False, p=...)`); vectorised over rows.
    """
    if log_weights is None and k * k <= 4 * population:
        # uniform and sparse: draw iid, redraw rows that repeat (P(repeat) ~ k^2 / 2 population)
        draws = rng.integers(0, population, size=(n, k))
        while True:
            ordered = np.sort(draws, axis=1)
            bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
            if not len(bad):
                return draws
            draws[bad] = rng.integers(0, population, size=(len(bad), k))
    scores = rng.gumbel(size=(n, population))
    if log_weights is not None:
        scores = scores + log_weights
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < population else np.tile(np.arange(population), (n, 1))
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)
