"""The training protocol: selection on validation, learning-rate grids, no-recall baselines, and
configuration errors that fail before anything trains."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from architectures.backbone import LanguageModel
from benchmarks import bench
from benchmarks.config import grid_runs
from benchmarks.leaderboard import select_best
from benchmarks.train import TrainConfig, train
from tasks import registry as tasks
from tasks.base import IGNORE

ROOT = Path(__file__).resolve().parent.parent


# --- selection on validation ---------------------------------------------------------------


def test_best_of_grid_is_chosen_on_validation_not_test():
    runs = pd.DataFrame(
        [  # the rate with the best test accuracy is not the one validation prefers
            {"group": "g", "lr": 1e-3, "val_accuracy": 0.70, "val_loss": 1.0, "accuracy": 0.95},
            {"group": "g", "lr": 3e-3, "val_accuracy": 0.90, "val_loss": 0.5, "accuracy": 0.60},
            {"group": "g", "lr": 1e-2, "val_accuracy": 0.90, "val_loss": 0.4, "accuracy": 0.50},
            {"group": "h", "lr": 1e-3, "val_accuracy": 0.10, "val_loss": 3.0, "accuracy": 0.10},
        ]
    )
    best = select_best(runs).set_index("group")
    assert best.loc["g", "lr"] == 1e-2  # best validation accuracy, then lowest validation loss
    assert best.loc["g", "accuracy"] == 0.50  # the test accuracy of that run, not the best test accuracy
    assert best.loc["g", "lr_grid"] == "0.001,0.003,0.01"
    assert best.loc["g", "grid_spread"] == "0.50-0.95"
    assert best.loc["h", "lr"] == 1e-3


def _tiny_model(task, seed=0):
    torch.manual_seed(seed)
    return LanguageModel(task.vocab_size, "attention", d_model=16, n_layers=1, seq_len=task.seq_len)


@pytest.mark.parametrize("backbone", ["language_model", "autoencoder"])
def test_the_loss_on_scored_positions_only_equals_the_loss_on_full_logits(backbone):
    """Training runs the last MLP and the head only where targets are scored; the loss and every
    gradient must be those of the full forward with ignored positions masked out."""
    from architectures.backbone import MODELS
    from benchmarks.train import loss_fn, scored_logits

    task = tasks.build("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    x, y = task.generate(8, seed=0)
    torch.manual_seed(0)
    model = MODELS[backbone](task.vocab_size, "hyena", d_model=16, n_layers=2, seq_len=task.seq_len).double()
    losses, grads = [], []
    for scored in (False, True):
        model.zero_grad()
        loss = loss_fn(*scored_logits(model, x, y)) if scored else loss_fn(model(x), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert (y != IGNORE).float().mean() < 0.5  # few positions scored: the shortcut is exercised
    # the loss is taken in float32 (loss_fn), so agreement is to float32's precision
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-8)


def test_training_never_looks_at_the_test_split():
    task = tasks.build("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    data = task.splits(256, 64, 64, seed=0)
    cfg = TrainConfig(steps=40, batch_size=16, eval_every=10, warmup_steps=5, lr=3e-3)
    scrambled = (data.test[0], torch.where(data.test[1] == IGNORE, IGNORE, 0))  # an unanswerable test split
    a = train(_tiny_model(task), data.train, data.val, data.test, cfg, torch.device("cpu"), seed=0, progress=False)
    b = train(_tiny_model(task), data.train, data.val, scrambled, cfg, torch.device("cpu"), seed=0, progress=False)
    assert a["history"] == b["history"] and a["best_step"] == b["best_step"] and a["steps"] == b["steps"]
    assert a["val_accuracy"] == b["val_accuracy"] and a["accuracy"] != b["accuracy"]


def test_training_stops_when_validation_is_solved_or_plateaus():
    task = tasks.build("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    data = task.splits(256, 64, 64, seed=0)
    device = torch.device("cpu")
    solved = train(_tiny_model(task), data.train, data.val, data.test, TrainConfig(steps=30, batch_size=8, eval_every=5,
                   warmup_steps=1, solved_accuracy=1e-9), device, seed=0, progress=False)  # fmt: skip
    assert solved["stopped"] == "solved" and solved["steps"] == 5
    stuck = train(_tiny_model(task), data.train, data.val, data.test, TrainConfig(steps=200, batch_size=8, eval_every=5,
                  warmup_steps=1, lr=1e-9, patience=2, plateau_delta=0.5), device, seed=0, progress=False)  # fmt: skip
    assert stuck["stopped"] == "plateau" and stuck["steps"] < 200
    budget = train(_tiny_model(task), data.train, data.val, data.test, TrainConfig(steps=12, batch_size=8, eval_every=5,
                   warmup_steps=1), device, seed=0, progress=False)  # fmt: skip
    assert budget["stopped"] == "budget" and budget["steps"] == 12 and budget["history"][-1]["step"] == 12


def test_a_group_is_trained_at_every_rate_of_its_grid():
    cfg = {"architecture": {"name": "gla", "lr_grid": [3e-3, 1e-3, 3e-3]}, "train": {"lr": 5e-4}, "task": {"name": "mqar"}}
    runs = grid_runs(cfg)
    assert [r["train"]["lr"] for r in runs] == [1e-3, 3e-3]
    assert all("lr_grid" not in r["architecture"] for r in runs)


# --- no-recall baselines -------------------------------------------------------------------


def _mode_so_far_by_loop(x, y, counted):
    """The running-mode guess, written as the plain loop over examples and positions."""
    hits, total = 0.0, 0
    for b in range(x.shape[0]):
        counts: dict[int, int] = {}
        for t in range(x.shape[1]):
            if y[b, t] != IGNORE:
                top = max(counts.values(), default=0)
                modes = [v for v, c in counts.items() if c == top] if top else None
                total += 1
                if modes is None:
                    hits += 1.0 / (max(x.max(), y.max()) + 1)
                elif y[b, t] in modes:
                    hits += 1.0 / len(modes)
            if counted[b, t]:
                counts[int(x[b, t])] = counts.get(int(x[b, t]), 0) + 1
    return hits / total


def test_mqar_no_recall_baseline_is_one_over_kv_pairs():
    for kv in (4, 8, 16):
        task = tasks.build("mqar", vocab_size=256, seq_len=64, num_kv_pairs=kv)
        x, y = task.generate(300, seed=1)
        assert task.no_recall_accuracy(x, y) == pytest.approx(1 / kv)


@pytest.mark.parametrize("name, params", [("in_context_recall", {"seq_len": 64}), ("noisy_recall", {}), ("fuzzy_recall", {})])
def test_recall_baseline_is_the_most_frequent_value_so_far(name, params):
    task = tasks.build(name, **params)
    x, y = task.generate(40, seed=3, split="test")
    xs = x.numpy()
    counted = (xs >= task.num_keys) & (xs < task.regular)
    if name != "fuzzy_recall":
        counted[:, 0::2] = False
    expected = _mode_so_far_by_loop(xs, y.numpy(), counted)
    assert task.no_recall_accuracy(x, y) == pytest.approx(expected)
    assert task.chance_accuracy < expected < 1  # values repeat across keys: far above 1/values


def test_in_context_recall_baseline_matches_the_frequency_guess_measured_in_the_issue():
    # the issue measured 0.326 and 0.213 for "most frequent value so far" at L 64, vocab 16 and 32
    for vocab, measured in ((16, 0.326), (32, 0.213)):
        task = tasks.build("in_context_recall", vocab_size=vocab, seq_len=64)
        assert task.no_recall_accuracy(*task.generate(2000, seed=0, split="test")) == pytest.approx(measured, abs=0.01)


def test_an_oracle_beats_every_no_recall_baseline():
    for name in tasks.names():
        task = tasks.build(name)
        x, y = task.generate(64, seed=2, split="test")
        assert task.no_recall_accuracy(x, y) < 1.0 - 1e-6, name
        assert np.isfinite(task.no_recall_accuracy(x, y))


# --- configuration errors fail fast ----------------------------------------------------------


def _cli(module: str, *overrides: str, store: Path):
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", module, "preset=smoke", "progress=false", f"store={store}", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.time() - start


BAD_CONFIGS = [
    ("benchmarks.run", ["train.steps=-5"], "train.steps"),
    ("benchmarks.run", ["task.num_kv_pairs=20", "task.seq_len=32"], "num_kv_pairs"),
    ("benchmarks.run", ["architecture=gla", "architecture.num_heads=3"], "num_heads"),
    ("benchmarks.run", ["architecture=no_such_module:Mixer"], "no_such_module"),
    ("benchmarks.bench", ["architecture.lr_grid=[0.001,-1]"], "lr_grid"),
    ("benchmarks.bench", ["architecture=examples.broken_mixer:BrokenOperator"], "conformance"),
    ("benchmarks.run", ["architecture=examples.gated_ema:GatedEma"], "GatedEMA"),  # lists the classes it has
    ("benchmarks.run", ["train.stpes=100"], "did you mean train.steps"),  # not Hydra's hint to add +train.stpes
    ("benchmarks.bench", ["architecture=atention"], "did you mean attention"),
]


@pytest.mark.parametrize("module, overrides, named", BAD_CONFIGS, ids=[c[2] for c in BAD_CONFIGS])
def test_bad_configuration_exits_at_once_with_one_line_and_no_record(tmp_path, module, overrides, named):
    store = tmp_path / "store"
    proc, seconds = _cli(module, *overrides, store=store)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not store.exists()  # nothing written, not even the store directory
    assert seconds < 60


def test_unwritable_store_exits_at_once(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for module in ("benchmarks.run", "benchmarks.bench"):
        proc, _ = _cli(module, store=blocker / "store")
        assert proc.returncode != 0
        assert proc.stderr.strip().count("\n") == 0 and "store" in proc.stderr and "Traceback" not in proc.stderr


def test_a_sweep_with_one_bad_combination_trains_nothing_and_says_which(tmp_path, capsys):
    # 9 kv pairs do not fit the smoke preset's 32 tokens (4 * 9 > 32); 4 do
    overrides = ["preset=smoke", f"store={tmp_path}", "progress=false", "task.num_kv_pairs=4,9", "architecture=attention,gla"]
    assert bench.main(overrides) == 2
    err = capsys.readouterr().err
    assert "num_kv_pairs" in err and "attention mqar" in err
    assert not (tmp_path / "records").exists()


def test_a_measure_is_recorded_at_log_spaced_evaluations_and_the_last():
    task = tasks.build("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    data = task.splits(128, 32, 32, seed=0)
    cfg = TrainConfig(steps=50, batch_size=8, eval_every=5, warmup_steps=1)
    calls = []
    out = train(_tiny_model(task), data.train, data.val, data.test, cfg, torch.device("cpu"), seed=0, progress=False,
                measure=lambda m: calls.append(1) or {"ess": {"ess_mean": 1.0}})  # fmt: skip
    measured = [h["step"] for h in out["history"] if "ess" in h]
    assert measured == [5, 10, 20, 40, 50] and len(calls) == 5
    assert set(out["seconds"]) == {"steps", "evaluation", "measure"}


def test_ess_at_tolerances_that_measure_use_never_exceeds_the_rank():
    from benchmarks.ess import RELATIVE_TOLERANCES, model_ess, summarize

    task = tasks.build("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    for mixer in ("attention", "mamba", "gla"):
        torch.manual_seed(0)
        model = LanguageModel(task.vocab_size, mixer, d_model=16, n_layers=1, seq_len=task.seq_len)
        layers = model_ess(model, task.generate(2, seed=0)[0])
        summary = summarize(layers)
        for kind in ("block", "operator"):
            means = [summary["ess_mean_by_tolerance"][f"{kind}:{r:g}"] for r in RELATIVE_TOLERANCES]
            assert all(a >= b for a, b in zip(means, means[1:], strict=False)), (
                mixer,
                kind,
                means,
            )  # larger tolerance, smaller ESS
            assert means[0] <= summary["ess_mean"] + 1e-9
        for key, ess in layers[0].by_tolerance.items():
            assert (ess <= layers[0].tolerance).all(), key


def test_a_launcher_sweep_skips_state_indices_a_mixer_does_not_have(tmp_path):
    # `benchmarks.run -m ... state=0,1` (a Hydra launcher) must not train attention, which has no
    # state knob, twice under one key
    proc, _ = _cli("benchmarks.run", "architecture=attention", "state=1", store=tmp_path / "store")
    assert proc.returncode == 0, proc.stderr
    assert "[skip]" in proc.stdout and "no state size 1" in proc.stdout
    assert not (tmp_path / "store").exists()


def test_evaluation_scores_the_same_positions_on_either_loss_path(monkeypatch):
    """The CPU path selects the scored positions; the GPU path keeps every position and lets the loss
    ignore the rest. Accuracy and loss must not depend on which one ran."""
    from benchmarks import train as train_module

    task = tasks.build("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    x, y = task.generate(64, seed=0)
    torch.manual_seed(0)
    model = LanguageModel(task.vocab_size, "attention", d_model=16, n_layers=2, seq_len=task.seq_len)
    cpu = train_module.evaluate(model, x, y, 16, torch.device("cpu"))
    monkeypatch.setattr(train_module, "scored_logits", lambda m, i, t: (m(i), t))  # what a GPU runs
    full = train_module.evaluate(model, x, y, 16, torch.device("cpu"))
    assert cpu["accuracy"] == full["accuracy"] and cpu["loss"] == pytest.approx(full["loss"], rel=1e-6)
