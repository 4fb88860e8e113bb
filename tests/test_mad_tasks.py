"""MAD's tasks against oracles that read each sequence the way the task defines it."""

import numpy as np
import pytest
import torch

from tasks import registry
from tasks.base import IGNORE
from tasks.mad import MAD_TASKS, Compression, FuzzyRecall, InContextRecall, Memorization, NoisyRecall, SelectiveCopying


def recall_oracle(task: InContextRecall, inputs: torch.Tensor) -> torch.Tensor:
    """Walk the key-value pairs; noise pairs (tokens from the noise vocabulary) are skipped."""
    preds = torch.full_like(inputs, IGNORE)
    for b, row in enumerate(inputs.tolist()):
        table = {}
        for t in range(0, len(row), 2):
            key, value = row[t], row[t + 1]
            if key >= task.regular:  # noise
                continue
            if key in table:
                preds[b, t] = table[key]
            table[key] = value
    return preds


def fuzzy_oracle(task: FuzzyRecall, inputs: torch.Tensor) -> torch.Tensor:
    """Keys and values come from disjoint vocabularies, so maximal runs delimit the motifs."""
    preds = torch.full_like(inputs, IGNORE)
    for b, row in enumerate(inputs.tolist()):
        runs, t = [], 0
        while t < len(row):
            if row[t] == task.pad_token:
                t += 1
                continue
            is_key = row[t] < task.num_keys
            start = t
            while t < len(row) and row[t] != task.pad_token and (row[t] < task.num_keys) == is_key:
                t += 1
            runs.append((is_key, start, tuple(row[start:t])))
        table = {}
        for j, (is_key, start, key) in enumerate(runs):
            if not is_key:
                continue
            end = start + len(key)
            if key in table:  # its value follows the key: token i is predicted at end - 1 + i
                for i, token in enumerate(table[key]):
                    if end - 1 + i < len(row):
                        preds[b, end - 1 + i] = token
            if j + 1 < len(runs):
                table[key] = runs[j + 1][2]
    return preds


def copy_oracle(task: SelectiveCopying, inputs: torch.Tensor) -> torch.Tensor:
    preds = torch.full_like(inputs, IGNORE)
    for b, row in enumerate(inputs.tolist()):
        cut = row.index(task.copy_token)
        tokens = [x for x in row[:cut] if x != task.blank_token]
        for j, token in enumerate(tokens):
            preds[b, cut + 1 + j] = token
    return preds


@pytest.mark.parametrize("params", [{}, {"seq_len": 256}, {"vocab_size": 64}])
def test_in_context_recall_oracle(params):
    task = InContextRecall(**params)
    x, y = task.generate(100, seed=1)
    assert x.shape == (100, task.seq_len)
    preds = recall_oracle(task, x)
    assert torch.equal(preds, y)  # scored exactly where a key repeats, with its value


@pytest.mark.parametrize("params", [{}, {"frac_noise": 0.6}, {"vocab_size": 80}])
def test_noisy_recall_oracle(params):
    task = NoisyRecall(**params)
    x, y = task.generate(100, seed=2)
    assert torch.equal(recall_oracle(task, x), y)
    assert (x >= task.regular).any()  # noise present
    assert (y[x >= task.regular] == IGNORE).all()


@pytest.mark.parametrize("split", ["train", "test"])
def test_fuzzy_recall_oracle(split):
    task = FuzzyRecall()
    x, y = task.generate(60, seed=3, split=split)
    assert x.shape == (60, task.seq_len)
    preds = fuzzy_oracle(task, x)
    scored = y != IGNORE
    assert torch.equal(preds[scored], y[scored])
    assert (scored.sum(1) >= 1).all()  # the final probe is always scored


def test_selective_copying_oracle():
    task = SelectiveCopying()
    x, y = task.generate(100, seed=4)
    assert torch.equal(copy_oracle(task, x), y)
    assert ((y != IGNORE).sum(1) == task.num_tokens_to_copy).all()


def test_compression_targets_are_the_clean_tokens():
    task = Compression(frac_noise=0.3, noise_vocab_size=4, vocab_size=20)
    x, y = task.generate(50, seed=5)
    clean = y != IGNORE
    assert torch.equal(x[clean], y[clean])
    assert (x[~clean] >= task.regular).all() and (x[:, -1] == task.vocab_size - 1).all()


def test_memorization_map_is_fixed_and_learnable_from_training_data():
    task = Memorization()
    (x_tr, y_tr), _, (x_te, y_te) = task.splits(512, 64, 64, seed=0)
    table = {}
    for xs, ys in zip(x_tr.tolist(), y_tr.tolist(), strict=True):
        for t in range(0, len(xs), 2):
            assert table.setdefault(xs[t], ys[t + 1]) == ys[t + 1]  # one value per key, across examples
    for xs, ys in zip(x_te.tolist(), y_te.tolist(), strict=True):
        for t in range(0, len(xs), 2):
            assert table[xs[t]] == ys[t + 1]


@pytest.mark.parametrize("cls", MAD_TASKS)
def test_mad_defaults_ladders_and_determinism(cls):
    task = registry.build(cls.name)
    assert task.ladder[0] == {} and len(task.ladder) > 1
    for level in task.ladder[1:3]:
        assert registry.build(cls.name, **level).generate(2, seed=0)[0].shape[1] == level.get("seq_len", task.seq_len)
    a, b = task.generate(40, seed=9), task.generate(40, seed=9)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert 0 < task.chance_accuracy < 1 and task.memory_demand > 0


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("selective_copying", {"seq_len": 32, "num_tokens_to_copy": 16}, "seq_len"),
        ("noisy_recall", {"vocab_size": 17}, "vocab_size"),
        ("noisy_recall", {"frac_noise": 1.5}, "frac_noise"),
        ("fuzzy_recall", {"k_motif_size": 9}, "k_motif_size"),
        ("in_context_recall", {"seq_len": 127}, "seq_len"),
        ("memorization", {"seq_len": -2}, "seq_len"),
        ("compression", {"colour": 3}, "unknown parameter"),
    ],
)
def test_impossible_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        registry.build(name, **params)


def test_generation_rate_is_far_above_training_consumption():
    """Sanity bound only (the rate itself is measured by the perf benchmark)."""
    x, _ = MAD_TASKS[0]().generate(4096, seed=0)
    assert np.unique(x.numpy(), axis=0).shape[0] > 4000
