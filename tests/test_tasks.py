"""Tasks against oracles that read the sequences the way the definitions say."""

import numpy as np
import pytest
import torch

from tasks import registry
from tasks.base import IGNORE
from tasks.mqar import MQAR


def mqar_oracle(inputs: torch.Tensor, num_kv_pairs: int) -> torch.Tensor:
    """Look each token up among the kv pairs at the start of its sequence."""
    preds = torch.full_like(inputs, IGNORE)
    for b, row in enumerate(inputs.tolist()):
        table = {row[2 * j]: row[2 * j + 1] for j in range(num_kv_pairs)}
        for t in range(2 * num_kv_pairs, len(row)):
            preds[b, t] = table.get(row[t], IGNORE)
    return preds


@pytest.mark.parametrize("params", [{}, {"vocab_size": 128, "seq_len": 64, "num_kv_pairs": 16}, *MQAR.ladder[:4]])
def test_mqar_oracle_scores_every_scored_position(params):
    task = MQAR(**{"vocab_size": 256, **params})
    x, y = task.generate(200, seed=3)
    assert x.shape == y.shape == (200, task.seq_len) and x.dtype == y.dtype == torch.long
    scored = y != IGNORE
    assert (scored.sum(1) == task.num_kv_pairs).all()  # every key queried exactly once
    assert torch.equal(mqar_oracle(x, task.num_kv_pairs)[scored], y[scored])


def test_mqar_keys_and_values_from_disjoint_halves():
    task = MQAR(vocab_size=100, seq_len=64, num_kv_pairs=8)
    x, y = task.generate(300, seed=0)
    keys, values = x[:, 0:16:2], x[:, 1:16:2]
    assert keys.min() >= 1 and keys.max() < 50 and values.min() >= 50 and values.max() < 100
    assert (y[y != IGNORE] >= 50).all()
    assert all(len(set(r)) == 8 for r in keys.tolist())
    assert (y[:, :16] == IGNORE).all()


def test_generation_is_deterministic_and_seed_dependent():
    task = MQAR(vocab_size=512, seq_len=128, num_kv_pairs=16)
    a, b = task.generate(2500, seed=7), task.generate(2500, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], task.generate(2500, seed=8)[0])


def test_train_never_shares_an_example_with_validation_or_test():
    task = MQAR(vocab_size=10, seq_len=8, num_kv_pairs=2)  # ~5e4 distinct examples: collisions are certain
    (x_train, _), (x_val, _), (x_test, _) = task.splits(2000, 300, 500, seed=0)
    held_out = {tuple(r) for r in x_test.tolist()} | {tuple(r) for r in x_val.tolist()}
    assert len(x_train) < 2000  # some were dropped...
    assert not any(tuple(r) in held_out for r in x_train.tolist())  # ...and none remain
    assert not torch.equal(x_val, x_test[:300])  # validation is its own draw


def test_query_gaps_follow_the_power_law():
    task = MQAR(vocab_size=256, seq_len=64, num_kv_pairs=1, power_a=0.5)
    n = 40000
    x, y = task.generate(n, seed=1)
    pos = (y != IGNORE).float().argmax(1)
    gaps = ((pos - 2) // 2).numpy()
    counts = np.bincount(gaps, minlength=task.space)
    expected = task.gap_probabilities() * n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # chi-square with space - 1 = 30 degrees of freedom: the 99.9% quantile is 59.7
    assert chi2 < 59.7
    # and a uniform law is rejected by the same statistic
    uniform = np.full(task.space, n / task.space)
    assert ((counts - uniform) ** 2 / uniform).sum() > 1000


@pytest.mark.parametrize(
    "params, match",
    [
        ({"seq_len": 64, "num_kv_pairs": 17}, "num_kv_pairs"),
        ({"vocab_size": 8, "seq_len": 8, "num_kv_pairs": 2}, "vocab_size"),
        ({"vocab_size": 64, "seq_len": 64}, "vocab_size"),
        ({"seq_len": -4}, "seq_len"),
        ({"seq_len": 63}, "even"),
        ({"power_a": 0}, "power_a"),
    ],
)
def test_impossible_parameters_name_the_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        MQAR(**params)


def test_task_registry():
    assert "mqar" in registry.names()
    with pytest.raises(ValueError, match="known tasks: .*mqar"):
        registry.build("mqarr")
    with pytest.raises(ValueError, match="mqar"):
        registry.build("mqar", kv_pairs=3)
