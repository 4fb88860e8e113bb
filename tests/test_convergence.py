"""The converged protocol (benchmarks/train.py, benchmarks/halving.py): a run continued from where it
paused equals one trained straight through; the plateau stop waits out a late transition; successive
halving promotes, extends past a winning edge and stops on a solve as documented; re-running a group
reproduces its choices; fresh training batches are a function of the step and never validation's."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from architectures.backbone import LanguageModel
from benchmarks import halving
from benchmarks.train import TrainConfig, TrainData, Trainer
from tasks import registry as tasks
from tasks.base import row_hashes

DEVICE = torch.device("cpu")


def _setup(seed: int = 0):
    task = tasks.build("mqar", vocab_size=32, seq_len=16, num_kv_pairs=2)
    data = task.splits(None, 32, 32, seed)
    stream = TrainData(task=task, seed=seed, exclude=row_hashes(torch.cat([data.val[0], data.test[0]])))
    torch.manual_seed(seed)
    model = LanguageModel(task.vocab_size, "gla", d_model=16, seq_len=task.seq_len, backbone="zoology")
    return task, data, stream, model


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=60, batch_size=8, eval_every=10, eval_batch_size=32, warmup_steps=5, lr=3e-3, schedule="wsd",
                cooldown=0.2, solved_accuracy=1.0)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_a_continued_run_equals_one_trained_straight_through(tmp_path):
    """Paused at a rung, finished (its cooldown on the side), checkpointed to disk, restored into a new
    process's objects and continued: the same weights, history and result as one uninterrupted run."""
    _, data, stream, model = _setup()
    straight = Trainer(model, stream, data.val, _cfg(), DEVICE, seed=0, progress=False)
    straight.advance(60)
    a = straight.finish(data.test)

    _, data, stream, model = _setup()
    paused = Trainer(model, stream, data.val, _cfg(), DEVICE, seed=0, progress=False)
    paused.advance(20)
    paused.finish(data.test, stopped="pruned")  # a cooldown on the side, as a pruned run gets
    torch.save(paused.state_dict(), tmp_path / "ckpt.pt")
    _, data, stream, model = _setup()
    resumed = Trainer(model, stream, data.val, _cfg(), DEVICE, seed=0, progress=False)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=False))
    resumed.advance(40)
    resumed.advance(60)
    b = resumed.finish(data.test)

    assert a["steps"] == b["steps"] == 72 and a["main_steps"] == b["main_steps"] == 60
    for key in ("accuracy", "loss", "val_accuracy", "val_loss", "best_step", "sequences", "stopped"):
        assert a[key] == b[key], key
    assert [(e["step"], e["val_loss"]) for e in a["history"]] == [(e["step"], e["val_loss"]) for e in b["history"]]
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def _scripted_losses(trainer: Trainer, curve: list[float]) -> int | None:
    """Feed validation losses, one evaluation every 100 steps, through the trainer's own progress
    tracking; returns the step at which it calls a plateau (None: never)."""
    for i, loss in enumerate(curve, start=1):
        trainer.step = 100 * i
        trainer._track({"val_accuracy": 0.25 if loss > 1.0 else 0.9, "val_loss": loss})
        if trainer._plateaued():
            return trainer.step
    return None


@pytest.mark.parametrize(("patience_steps", "stops_at"), [(2000, None), (500, 600)])
def test_the_plateau_window_waits_out_a_late_transition(patience_steps, stops_at):
    """MQAR's curve: flat at the no-recall loss for 1,300 steps, then the transition. A 2,000-step
    window (the published protocol's) waits it out; a 500-step window stops the run in the flat phase."""
    _, data, stream, model = _setup()
    trainer = Trainer(model, stream, data.val, _cfg(steps=10_000, patience_steps=patience_steps, patience_fraction=0.25),
                      DEVICE, seed=0, progress=False)  # fmt: skip
    flat = [1.386 + 0.002 * (-1) ** i for i in range(13)]
    transition = [1.2, 0.8, 0.4, 0.1, 0.05, 0.04, 0.039]
    assert _scripted_losses(trainer, flat + transition) == stops_at


def test_a_loss_falling_slowly_but_steadily_is_progress_not_a_plateau():
    """Flat accuracy, validation loss falling 0.5% an evaluation (10% over a 2,000-step window): each
    evaluation misses the 1% margin against the one before, yet the run improves; only a loss that
    stays within 1% of its value for the whole window is a plateau."""
    _, data, stream, model = _setup()
    cfg = _cfg(steps=10_000, patience_steps=2000, patience_fraction=0.25)
    falling = [3.0 * 0.995**i for i in range(60)]
    trainer = Trainer(model, stream, data.val, cfg, DEVICE, seed=0, progress=False)
    assert _scripted_losses(trainer, falling) is None
    trainer = Trainer(model, stream, data.val, cfg, DEVICE, seed=0, progress=False)
    assert _scripted_losses(trainer, [3.0 * 0.9995**i for i in range(60)]) == 2100  # last progress at step 100


def test_the_window_grows_with_the_run():
    """max(patience_steps, patience_fraction x steps): at step 20,000 a quarter of the run, 5,000 steps."""
    _, data, stream, model = _setup()
    trainer = Trainer(model, stream, data.val, _cfg(steps=40_000, patience_steps=2000, patience_fraction=0.25), DEVICE, 0, False)
    trainer.step, trainer.last_progress = 20_000, 16_000
    assert not trainer._plateaued()
    trainer.step = 22_000  # 6,000 steps without progress; the window is 5,500
    assert trainer._plateaued()


class _Scripted:
    """A run whose validation accuracy at step s is `curve(s)`, with the Trainer's interface."""

    def __init__(self, lr: float, curve, solve_at: float = 0.995, cap: int = 10_000):
        self.lr, self.curve, self.solve_at, self.cap = lr, curve, solve_at, cap
        self.history, self.stopped, self.step = [], None, 0
        self.best = {"val_accuracy": -1.0, "val_loss": math.inf}
        self.trained = 0

    def advance(self, until: int):
        while self.step < min(until, self.cap) and self.stopped is None:
            self.step += 100
            self.trained += 100
            acc = self.curve(self.step)
            self.history.append({"step": self.step, "val_accuracy": acc, "val_loss": 1 - acc})
            if acc > self.best["val_accuracy"]:
                self.best = {"val_accuracy": acc, "val_loss": 1 - acc}
            if acc >= self.solve_at:
                self.stopped = "solved"
        if self.stopped is None and self.step >= self.cap:
            self.stopped = "budget"
        return self.stopped


def _search(curves: dict[float, object], extend: int = 0, budgets=(1000, 3000, 10_000)):
    made = {}

    def make(lr):
        made[lr] = _Scripted(lr, curves.get(lr, lambda s: 0.1))
        return made[lr]

    result, runs = halving.search(sorted(curves), make, list(budgets), promote=2, extend=extend)
    return result, runs, made


def test_halving_promotes_the_better_half_and_ends_the_others_pruned():
    curves = {1e-3: lambda s: 0.1 + s / 1e5, 3e-3: lambda s: 0.3 + s / 1e5, 1e-2: lambda s: 0.2 + s / 1e5, 3e-2: lambda s: 0.05}
    result, runs, _ = _search(curves)
    assert result.ended == {1e-3: "pruned", 3e-3: "budget", 1e-2: "pruned", 3e-2: "pruned"}
    assert {lr: r.trained for lr, r in runs.items()} == {1e-3: 1000, 3e-3: 10_000, 1e-2: 3000, 3e-2: 1000}
    assert result.rung == {1e-3: 0, 3e-3: 2, 1e-2: 1, 3e-2: 0}


def test_a_solve_ends_the_group_after_the_first_rung():
    """Every rate trains the first rung (a record each); after that the first solve ends the group."""
    curves = {1e-3: lambda s: 0.2, 3e-3: lambda s: 1.0 if s >= 2000 else 0.5, 1e-2: lambda s: 0.4}
    result, runs, _ = _search(curves)
    assert result.ended[3e-3] == "solved" and runs[3e-3].trained == 2000
    assert runs[1e-2].trained == 1000  # promoted beside it, but ranked second: the solve came first


def test_a_search_checkpointed_in_stretches_makes_the_same_choices_and_saves_at_each_multiple():
    """With `stretch`, each advance to a budget pauses (and saves) at every multiple of the stretch on the
    way; the runs train exactly as without it."""
    curves = {1e-3: lambda s: 0.1 + s / 1e5, 3e-3: lambda s: 0.3 + s / 1e5, 1e-2: lambda s: 0.2 + s / 1e5}
    plain, _, plain_runs = _search(curves)
    made, saves = {}, []

    def make(lr):
        made[lr] = _Scripted(lr, curves[lr])
        return made[lr]

    stretched, _ = halving.search(sorted(curves), make, [1000, 3000, 10_000], promote=2,
                                  saved=lambda lr, run: saves.append((lr, run.step)), stretch=4000)  # fmt: skip
    assert (stretched.ended, stretched.rung) == (plain.ended, plain.rung)
    assert {lr: r.history for lr, r in made.items()} == {lr: r.history for lr, r in plain_runs.items()}
    assert [step for lr, step in saves if lr == 3e-3] == [1000, 3000, 4000, 8000, 10_000]


def test_stretches_pause_at_multiples_of_the_stretch_from_whatever_step_a_run_resumes_at():
    """A continuation resumes at a cap that need not be a multiple of the stretch (a cap of 16,000 under
    a stretch of 4,200, say): its pauses still fall on the multiples, so a killed and resumed run pauses
    where the unbroken one did; a run that stops early ends its stretches."""
    run = SimpleNamespace(step=16_000, stopped=None)
    pauses = []
    for until in halving.stretches(run, 30_000, 4200):
        pauses.append(until)
        run.step = until
    assert pauses == [16_800, 21_000, 25_200, 29_400, 30_000]
    run = SimpleNamespace(step=0, stopped=None)
    for until in halving.stretches(run, 30_000, 4200):
        run.step, run.stopped = until, "plateau"
    assert run.step == 4200


def test_a_continuations_config_is_its_searched_runs_with_the_cap_raised_and_maps_back():
    """`continued_config` and `searched_config` are inverses: a continuation's design and protocol are
    read from the search it came from (the budgets its record keeps)."""
    from benchmarks.config import continued_config, searched_config

    searched = {"seed": 1, "task": {"seq_len": 64}, "train": {"lr": 1e-3, "steps": 16_000, "rungs": [1000, 4000]}}
    continued = continued_config(searched, 48_000)
    assert continued["train"] == {"lr": 1e-3, "steps": 48_000, "rungs": None} and continued["task"] == searched["task"]
    assert searched_config(continued, [1000, 4000, 16_000]) == searched
    assert searched["train"]["steps"] == 16_000  # the searched config is left as it was


def test_a_winning_edge_extends_the_grid_by_its_own_spacing():
    curves = {1e-3: lambda s: 0.1, 3e-3: lambda s: 0.2, 1e-2: lambda s: 0.3 + s / 1e5}
    result, runs, _ = _search({**curves, 3e-2: lambda s: 0.5 + s / 1e5}, extend=1)
    assert result.extended == [0.09] and 0.09 in runs  # 3e-2 * (3e-2 / 1e-2)
    result, _, _ = _search(curves, extend=0)
    assert result.extended == []


def test_a_search_replayed_over_its_runs_final_states_makes_the_same_choices():
    """A group killed while writing its records replays its search over runs restored at their final
    states. Here the grid's edge (1e-2) wins the first play, the extension (0.0333) changes the winner
    (3e-3 trains to the cap in the second play and ends above 1e-2), so a replay that read the runs'
    final bests would see a middle rate win, not extend, and leave the extended run without a record."""
    curves = {1e-3: lambda s: 0.1, 3e-3: lambda s: 0.2 + s / 5e4, 1e-2: lambda s: min(0.35, 0.15 + s / 2e4),
              0.0333: lambda s: 0.25}  # fmt: skip
    grid, budgets = [1e-3, 3e-3, 1e-2], [1000, 3000, 10_000]
    made = {}

    def make(lr):
        made[lr] = _Scripted(lr, curves[lr])
        return made[lr]

    first, _ = halving.search(grid, make, budgets, promote=2, extend=1)
    assert first.extended == [0.0333] and first.ended == {1e-3: "pruned", 3e-3: "budget", 1e-2: "budget", 0.0333: "pruned"}
    trained = {lr: r.trained for lr, r in made.items()}
    replay, _ = halving.search(grid, lambda lr: made[lr], budgets, promote=2, extend=1)
    assert (replay.rates, replay.extended, replay.rung, replay.ended) == (first.rates, first.extended, first.rung, first.ended)
    assert {lr: r.trained for lr, r in made.items()} == trained  # the replay trained nothing more


def test_a_replayed_search_does_not_see_a_later_solve_early():
    """A run that solved only at the cap: replayed, the search does not end the group at the first rung."""
    curves = {1e-3: lambda s: 0.2, 3e-3: lambda s: 1.0 if s >= 8000 else 0.5, 1e-2: lambda s: 0.4}
    first, _, made = _search(curves)
    replay, _ = halving.search(sorted(curves), lambda lr: made[lr], [1000, 3000, 10_000], promote=2)
    assert (replay.rung, replay.ended) == (first.rung, first.ended) and first.rung[3e-3] == 2


def test_rerunning_a_group_reproduces_its_choices(tmp_path):
    """Two runs of one small group (successive halving at tiny budgets, fresh batches): the same rates
    tried, the same ends, the same accuracies."""
    from benchmarks.bench import expand
    from benchmarks.run import run_group

    overrides = ["preset=smoke", "architecture=attention", "train.schedule=wsd", "train.rungs=[20,40]", "train.steps=80",
                 "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false"]  # fmt: skip
    outcomes = []
    for store in ("a", "b"):
        (cfg,) = expand([*overrides, f"store={tmp_path / store}"])
        records = run_group(cfg)
        outcomes.append(sorted((r["config"]["train"]["lr"], r["metrics"]["stopped"], r["metrics"]["accuracy"],
                                r["metrics"]["search"]["rung"]) for r in records))  # fmt: skip
        assert not list((tmp_path / store / "checkpoints").glob("*.pt"))  # removed once the records landed
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 2
    # every rate starts from one initialization: one ESS at init, and training moved ESS away from it
    inits = {json.dumps(r["metrics"]["ess_at_init"], sort_keys=True) for r in records}
    assert len(inits) == 1
    assert any(r["metrics"]["ess_at_init"]["ess_mean"] != r["metrics"]["history"][-1]["ess"]["ess_mean"] for r in records)


def test_a_group_killed_between_its_record_writes_is_completed_not_skipped(tmp_path):
    """A sweep killed after a group wrote some of its records (checkpoints still there): the next run
    writes the missing records and keeps the written ones, where it used to call the group done."""
    from benchmarks.bench import expand
    from benchmarks.run import run_group
    from benchmarks.store import Store

    overrides = ["preset=smoke", "architecture=attention", "train.schedule=wsd", "train.rungs=[20]", "train.steps=40",
                 "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false",
                 f"store={tmp_path}"]  # fmt: skip
    (cfg,) = expand(overrides)
    store = Store(str(tmp_path))
    complete = {r["key"]: r for r in run_group(cfg)}
    assert len(complete) == 2
    lost, kept = sorted(complete)
    store.path(lost).unlink()  # as if killed before its write: its checkpoint is still there
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "checkpoints" / f"{lost}.pt").write_bytes(b"")  # unreadable: retrained from scratch
    before = store.path(kept).read_bytes()
    again = {r["key"]: r for r in run_group(cfg)}
    assert again.keys() == complete.keys() and store.path(lost).exists()
    assert store.path(kept).read_bytes() == before  # the written record is kept as it was
    assert again[lost]["metrics"]["accuracy"] == complete[lost]["metrics"]["accuracy"]


def test_a_sweep_completes_a_group_killed_between_its_record_writes(tmp_path):
    """The sweep driver, not only `run_group`: a group with some of its records is not done; the next
    sweep writes the missing one (it used to skip any group with a record)."""
    from benchmarks.bench import main
    from benchmarks.store import Store

    overrides = ["preset=smoke", "architecture=attention", "train.schedule=wsd", "train.rungs=[20]", "train.steps=40",
                 "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false",
                 f"store={tmp_path}", "reference="]  # fmt: skip
    assert main(overrides) == 0
    store = Store(str(tmp_path))
    keys = sorted(r["key"] for r in store.records())
    store.path(keys[0]).unlink()
    assert main(overrides) == 0
    assert sorted(r["key"] for r in store.records()) == keys


def test_a_group_killed_inside_a_stretch_resumes_from_its_last_checkpoint_and_ends_as_if_unbroken(tmp_path, monkeypatch):
    """A run saves its checkpoint every `CHECKPOINT_STEPS` inside a rung, not only at the rung's end: a
    sweep killed there resumes from that step, and the group's records equal those of the group trained
    without a break."""
    from benchmarks import run as run_module
    from benchmarks.bench import expand
    from benchmarks.run import run_group

    monkeypatch.setattr(run_module, "CHECKPOINT_STEPS", 20)
    overrides = ["preset=smoke", "architecture=gla", "train.schedule=wsd", "train.rungs=[20]", "train.steps=80",
                 "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false",
                 "train.solved_accuracy=1.0"]  # fmt: skip

    def outcome(records):
        return sorted((r["config"]["train"]["lr"], r["metrics"]["stopped"], r["metrics"]["accuracy"],
                       [(h["step"], h["val_loss"]) for h in r["metrics"]["history"]]) for r in records)  # fmt: skip

    (unbroken,) = expand([*overrides, f"store={tmp_path / 'unbroken'}"])
    expected = outcome(run_group(unbroken))
    (cfg,) = expand([*overrides, f"store={tmp_path / 'killed'}"])
    save = run_module._save

    def save_then_die_at_step_60(path, trainer):
        save(path, trainer)
        if trainer.step == 60:  # inside the stretch from the rung (20) to the cap (80)
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_save", save_then_die_at_step_60)
    with pytest.raises(KeyboardInterrupt):
        run_group(cfg)
    kept = [torch.load(p, weights_only=False)["step"] for p in (tmp_path / "killed" / "checkpoints").glob("*.pt")]
    assert sorted(kept) == [20, 60]  # the pruned rate at its rung, the promoted one where it was killed
    monkeypatch.setattr(run_module, "_save", save)
    resumed = run_group(cfg)
    assert outcome(resumed) == expected
    assert not any("trained_by" in r["provenance"] for r in resumed)  # one commit on one CPU trained every step


def test_a_run_resumed_under_another_commit_names_who_trained_which_steps(tmp_path, monkeypatch):
    """A record names the commit and CPU of the process that wrote it; a run resumed from a checkpoint
    that another commit (or CPU) saved lists who trained which steps (`provenance.trained_by`), and its
    record cell says so; a checkpoint saved before stretches were kept names no one for its steps."""
    from benchmarks import provenance
    from benchmarks import run as run_module
    from benchmarks.bench import expand
    from benchmarks.provenance import cpu, git_state
    from benchmarks.record import load
    from benchmarks.report.rows import run_rows
    from benchmarks.run import run_group
    from benchmarks.store import Store

    monkeypatch.setattr(run_module, "CHECKPOINT_STEPS", 20)
    overrides = ["preset=smoke", "architecture=gla", "train.schedule=wsd", "train.rungs=[20]", "train.steps=80",
                 "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false",
                 "train.solved_accuracy=1.0"]  # fmt: skip
    save, first, here = run_module._save, git_state()["commit"], cpu()["identity"]

    def save_then_die_at_step_60(path, trainer):
        save(path, trainer)
        if trainer.step == 60:
            raise KeyboardInterrupt

    for store, forget in (("stretches", False), ("before-stretches", True)):
        (cfg,) = expand([*overrides, f"store={tmp_path / store}"])
        monkeypatch.setattr(run_module, "_save", save_then_die_at_step_60)
        with pytest.raises(KeyboardInterrupt):
            run_group(cfg)
        if forget:  # as a checkpoint written before checkpoints kept their stretches
            for path in (tmp_path / store / "checkpoints").glob("*.pt"):
                state = torch.load(path, weights_only=False)
                torch.save({k: v for k, v in state.items() if k != "trained_by"}, path)
        monkeypatch.setattr(run_module, "_save", save)
        monkeypatch.setattr(provenance, "git_state", lambda: {"commit": "f" * 40, "dirty": False})
        records = {r["metrics"]["main_steps"]: r for r in run_group(cfg)}
        monkeypatch.setattr(provenance, "git_state", git_state)
        promoted = records[80]
        earlier = {"until": 60} if forget else {"until": 60, "commit": first, "cpu": here}
        last = {"until": promoted["metrics"]["steps"], "commit": "f" * 40, "cpu": here}
        assert promoted["provenance"]["trained_by"] == [earlier, last]
        load(Store(str(tmp_path / store)).path(promoted["key"]))  # the typed record accepts it
        cell = run_rows(Store(str(tmp_path / store)).records()).set_index("key").loc[promoted["key"], "trained_by"]
        assert cell.startswith("to 60: not recorded; " if forget else f"to 60: {first[:10]} on {here}; ")
        assert cell.endswith(f": ffffffffff on {here}")


CONTINUED = ["preset=smoke", "architecture=gla", "train.schedule=wsd", "train.rungs=[20]", "train.steps=40",
             "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false",
             "train.solved_accuracy=1.0"]  # fmt: skip


@pytest.mark.parametrize("from_its_state", [True, False], ids=["from-its-state", "retrained"])
def test_a_capped_run_continued_equals_the_run_trained_straight_to_the_longer_cap(tmp_path, from_its_state):
    """`continue_to`: the run a search ended at the cap, trained further (from its state before the
    cooldown, or again from its first step when that state is gone), equals the same run trained alone,
    straight through, to the longer cap; the page's row for that rate is the continued run."""
    from benchmarks.backfill import trainer_seconds
    from benchmarks.bench import expand
    from benchmarks.report.rows import run_rows, run_seconds
    from benchmarks.run import continue_group, run_group, run_one
    from benchmarks.store import Store

    (cfg,) = expand([*CONTINUED, f"store={tmp_path / 'sweep'}"])
    searched = run_group(cfg)
    capped = [r for r in searched if r["metrics"]["stopped"] == "budget"]
    assert len(capped) == 1 and (tmp_path / "sweep" / "continuable" / f"{capped[0]['key']}.pt").exists()
    if not from_its_state:
        (tmp_path / "sweep" / "continuable" / f"{capped[0]['key']}.pt").unlink()
    (cfg,) = expand([*CONTINUED, f"store={tmp_path / 'sweep'}", "continue_to=80"])
    (cont,) = continue_group(cfg)  # what run_group(cfg) trains after the search (recorded)
    assert cont["status"] == "ok" and cont["continues"] == capped[0]["key"] and cont["group"] == capped[0]["group"]
    carried = cont["metrics"]["continued"].pop("seconds_carried")
    assert cont["metrics"]["continued"] == {"run": capped[0]["key"], "cap": 40, "why": "cap"}
    assert cont["metrics"]["main_steps"] == 80
    # what it carried is the time the capped run's trainer spent (its record's, less the final ESS, measured
    # outside it), or nothing where it was trained again from its first step; its own time fits its wall clock
    assert carried == pytest.approx(trainer_seconds(capped[0]) if from_its_state else 0.0, abs=0.02)
    assert run_seconds(Store(str(tmp_path / "sweep")).get(cont["key"])) <= cont["wall_time_s"]
    assert continue_group(cfg) == [Store(str(tmp_path / "sweep")).get(cont["key"])]  # done: not trained again
    assert not list((tmp_path / "sweep" / "checkpoints").glob("*.pt"))

    straight = run_one({**cont["config"], "store": str(tmp_path / "straight")})
    for key in ("accuracy", "val_accuracy", "val_loss", "best_step", "steps", "sequences", "stopped"):
        assert cont["metrics"][key] == straight["metrics"][key], key
    assert [(e["step"], e["val_loss"]) for e in cont["metrics"]["history"]] == [
        (e["step"], e["val_loss"]) for e in straight["metrics"]["history"]
    ]
    rows = run_rows(Store(str(tmp_path / "sweep")).records())
    assert len(rows) == 2 and sorted(rows["key"]) == sorted([cont["key"], *(r["key"] for r in searched if r is not capped[0])])
    assert rows.set_index("key").loc[cont["key"], "steps"] == cont["metrics"]["steps"]
    assert math.isnan(rows.set_index("key").loc[cont["key"], "parted_at"])  # the capped run's curve, continued


@pytest.mark.parametrize("kept", ["its-state", "the-searched-runs-state"])
def test_a_cap_raised_twice_continues_the_first_continuation(tmp_path, kept):
    """`continue_to` above an earlier `continue_to`: the run continues from where the first continuation
    ended (or, its kept state gone, from the searched run's), equals the run trained straight to the
    higher cap, names the first continuation as the run it trains further, and alone is the page's row;
    a continuation that stopped on a plateau is not trained further."""
    from benchmarks.backfill import trainer_seconds
    from benchmarks.bench import expand, main
    from benchmarks.report.rows import run_rows, run_seconds
    from benchmarks.run import continuation_runs, continue_group, run_group, run_one
    from benchmarks.store import Store

    sweep = tmp_path / "sweep"
    (cfg,) = expand([*CONTINUED, f"store={sweep}"])
    searched = run_group(cfg)
    (first,) = continue_group(expand([*CONTINUED, f"store={sweep}", "continue_to=80"])[0])
    assert first["metrics"]["stopped"] == "budget" and (sweep / "continuable" / f"{first['key']}.pt").exists()
    if kept == "the-searched-runs-state":
        (sweep / "continuable" / f"{first['key']}.pt").unlink()
    assert main([*CONTINUED, f"store={sweep}", "continue_to=120"]) == 0  # the sweep, as a user raises the cap
    (second,) = [r for r in Store(str(sweep)).records() if r["config"]["train"]["steps"] == 120]
    carried = second["metrics"]["continued"].pop("seconds_carried")
    assert second["continues"] == first["key"]
    assert second["metrics"]["continued"] == {"run": first["key"], "cap": 80, "why": "cap"}
    straight = run_one({**second["config"], "store": str(tmp_path / "straight")})
    for key in ("accuracy", "val_loss", "best_step", "steps", "sequences", "stopped"):
        assert second["metrics"][key] == straight["metrics"][key], key
    assert [(e["step"], e["val_loss"]) for e in second["metrics"]["history"]] == [
        (e["step"], e["val_loss"]) for e in straight["metrics"]["history"]
    ]
    store = Store(str(sweep))
    assert continue_group(expand([*CONTINUED, f"store={sweep}", "continue_to=80"])[0]) == [first]  # not trained again
    rows = run_rows(store.records()).set_index("key")
    assert second["key"] in rows.index and first["key"] not in rows.index and len(rows) == len(searched)
    assert math.isnan(rows.loc[second["key"], "parted_at"])
    (capped,) = [r for r in searched if r["key"] == first["continues"]]
    resumed_from = first if kept == "its-state" else capped  # the kept state the second continuation took
    assert carried == pytest.approx(trainer_seconds(resumed_from), abs=0.02)
    second = store.get(second["key"])
    for r in (first, second):  # a continuation's own time fits its process's wall clock: nothing counted twice
        assert 0 < run_seconds(r) <= r["wall_time_s"]
    spent = sum(run_seconds(r) for r in (capped, first, second))  # the row's cost: all three trainings
    assert rows.loc[second["key"], "run_seconds"] == pytest.approx(spent)
    store.write({**second, "metrics": {**second["metrics"], "stopped": "plateau"}})  # as if it had stopped there
    assert continuation_runs(expand([*CONTINUED, f"store={sweep}", "continue_to=160"])[0], store) == []


def test_a_rate_pruned_in_a_tie_is_trained_on_and_one_pruned_on_its_merits_is_not(tmp_path):
    """`continue_to` also trains further a rate the search pruned at a rung where its validation accuracy lay
    within sampling noise of the promoted rate's and its loss was lower (`halving.tied`), from its first
    step (no state is kept for a pruned run): it equals that rate trained straight to the cap. A pruned
    rate whose loss was higher, or any pruned rate of a group that solved the task, is left as it is."""
    from benchmarks.bench import expand
    from benchmarks.report.rows import run_rows
    from benchmarks.run import _scored_in_validation, continuation_runs, continue_group, run_group, run_one
    from benchmarks.store import Store

    sweep = tmp_path / "sweep"
    (cfg,) = expand([*CONTINUED, f"store={sweep}"])
    searched = {r["metrics"]["stopped"]: r for r in run_group(cfg)}
    pruned, promoted = searched["pruned"], searched["budget"]
    store = Store(str(sweep))
    n = _scored_in_validation(cfg)

    def rescored(record: dict, accuracy: float, loss: float) -> None:  # its score at the rung (step 20)
        history = [
            {**h, "val_accuracy": accuracy, "val_loss": loss} if h["step"] == 20 else h for h in record["metrics"]["history"]
        ]
        store.write({**record, "metrics": {**record["metrics"], "history": history}})

    a, loss = 0.5, 2.0
    rescored(promoted, a, loss)
    (continued,) = expand([*CONTINUED, f"store={sweep}", "continue_to=80"])
    rescored(pruned, a, loss + 0.01)  # the same accuracy, a higher loss: pruned on its merits
    assert [p["key"] for p, _ in continuation_runs(continued, store)] == [promoted["key"]]
    noise = 2 * math.sqrt(2 * a * (1 - a) / n)  # two standard errors of the difference of two such accuracies
    rescored(pruned, a - 1.5 * noise, loss - 0.01)  # the loss lower, but the accuracy well below: no tie
    assert len(continuation_runs(continued, store)) == 1
    rescored(pruned, a - 0.5 * noise, loss - 0.01)  # within noise, the loss lower: a tie
    ties = [p for p, _ in continuation_runs(continued, store) if p["key"] == pruned["key"]]
    assert len(ties) == 1
    records = {r["continues"]: r for r in continue_group(continued)}
    tie = records[pruned["key"]]
    assert tie["metrics"]["continued"] == {"run": pruned["key"], "cap": 20, "why": "pruned in a tie", "seconds_carried": 0.0}
    straight = run_one({**tie["config"], "store": str(tmp_path / "straight")})
    assert [(e["step"], e["val_loss"]) for e in tie["metrics"]["history"]] == [
        (e["step"], e["val_loss"]) for e in straight["metrics"]["history"]
    ]
    row = run_rows(store.records()).set_index("key").loc[tie["key"]]
    assert row["continued"] == "pruned in a tie at 20 steps, trained on"
    store.write({**promoted, "metrics": {**promoted["metrics"], "stopped": "solved"}})  # as if the group had solved
    assert all(p["key"] != pruned["key"] for p, _ in continuation_runs(continued, store) or [])


def test_the_tie_uses_the_validation_splits_scored_positions():
    from benchmarks.bench import expand
    from benchmarks.run import _scored_in_validation

    (cfg,) = expand([*CONTINUED, "store=/nonexistent"])
    assert _scored_in_validation(cfg) == cfg["data"]["num_val"] * cfg["task"]["num_kv_pairs"]  # MQAR: every query


def test_a_continued_row_and_a_seed_of_its_design_are_replicates_of_one_design(tmp_path):
    """The page keeps each design's lowest seed. A seed-0 run trained past its cap (its config has the
    raised cap and no rungs) and the seed-1 run of the same design share the design, so only seed 0 is a
    leaderboard row; the continuation's config made the seed-1 row a design of its own (10 rows at L 64)."""
    from benchmarks.bench import expand
    from benchmarks.report.rows import run_rows
    from benchmarks.report.stats import first_seed
    from benchmarks.run import continue_group, run_group

    store = tmp_path / "sweep"
    (searched,) = expand([*CONTINUED, f"store={store}"])
    records = run_group(searched)
    assert any(r["metrics"]["stopped"] == "budget" for r in records)
    (further,) = expand([*CONTINUED, f"store={store}", "continue_to=80"])
    records += continue_group(further)
    (replicate,) = expand([*CONTINUED, f"store={store}", "seed=1"])
    records += run_group(replicate)
    rows = run_rows(records)
    assert rows["design"].nunique() == 1 and sorted(rows["seed"]) == [0, 0, 1, 1]
    kept = first_seed(rows)
    assert set(kept["seed"]) == {0} and kept["group"].nunique() == 1


def test_a_run_continued_twice_from_its_state_is_one_row_the_higher_caps():
    """Two continuations of one capped run (two sweeps before commit d0a8d11 could train both: to 48,000
    steps and, from the same state, to 96,000): the higher cap's trained the same first steps and on, so
    it alone is the rate's row."""
    import copy

    from record_factory import CONFIG, valid_record

    from benchmarks.report.rows import run_rows

    capped = valid_record(accuracy=0.5)
    capped["metrics"]["stopped"] = "budget"

    def further(steps: int, accuracy: float) -> dict:
        cfg = copy.deepcopy(CONFIG)
        cfg["train"]["steps"] = steps
        r = valid_record(cfg, accuracy=accuracy, group=capped["group"], continues=capped["key"])
        r["metrics"]["continued"] = {"run": capped["key"], "cap": 4, "why": "cap"}
        return r

    lower, higher = further(48_000, 0.8), further(96_000, 0.9)
    for records in ([capped, lower, higher], [higher, lower, capped]):
        rows = run_rows(records)
        assert list(rows["key"]) == [higher["key"]] and rows["accuracy"].item() == 0.9
    assert list(run_rows([capped, lower])["key"]) == [lower["key"]]  # one continuation: its row, as before


def test_a_continuation_that_left_the_capped_runs_curve_is_named_a_new_draw():
    """`parted_at`: the first evaluation up to the cap where a continuation's validation loss is not the
    capped run's (retrained under other code: float rounding parts them); NaN where they agree."""
    from benchmarks.report.rows import parted_at

    curve = [{"step": s, "val_loss": 3.0 - s / 1000, "val_accuracy": 0.1} for s in range(200, 2001, 200)]
    parent = {"metrics": {"history": curve}}
    later = [{**h, "val_loss": h["val_loss"] - 0.5} for h in curve if h["step"] > 1000] + [{"step": 2200, "val_loss": 0.1}]
    run = {"metrics": {"continued": {"cap": 1000, "run": "p"}, "history": [h for h in curve if h["step"] <= 1000] + later}}
    assert math.isnan(parted_at(run, parent))  # after the cap the curves may differ: the parent's cooldown, its end
    run["metrics"]["history"][2] = {**curve[2], "val_loss": curve[2]["val_loss"] + 1e-4}
    assert parted_at(run, parent) == 600.0


def test_caps_in_one_job_train_the_group_as_the_sweeps_one_cap_at_a_time_do(tmp_path):
    """`continue_to=[80,120]`: one job per group searches it, then trains its capped run on to each cap in
    turn (resuming from the state it left on this machine), and writes the records that a search and
    two `continue_to` sweeps write one after another; a second call finds the job done."""
    from benchmarks.bench import expand, main
    from benchmarks.run import run_group
    from benchmarks.store import Store

    staged = tmp_path / "staged"
    for caps in ([], ["continue_to=80"], ["continue_to=120"]):
        run_group(expand([*CONTINUED, f"store={staged}", *caps])[0])
    assert main([*CONTINUED, f"store={tmp_path / 'job'}", "continue_to=[80,120]"]) == 0
    assert not list((tmp_path / "job" / "checkpoints").glob("*.pt"))

    def outcome(root):
        return sorted((r["key"], r.get("continues"), r["metrics"]["stopped"], r["metrics"]["accuracy"],
                       [(h["step"], h["val_loss"]) for h in r["metrics"]["history"]])
                      for r in Store(str(root)).records())  # fmt: skip

    assert outcome(tmp_path / "job") == outcome(staged)
    assert {r["config"]["train"]["steps"] for r in Store(str(staged)).records()} == {40, 80, 120}
    (job,) = expand([*CONTINUED, f"store={tmp_path / 'job'}", "continue_to=[80,120]"])
    assert sorted(r["key"] for r in run_group(job)) == sorted(r[0] for r in outcome(staged))  # done: nothing trains


def test_a_higher_cap_waits_for_the_lower_caps_continuation_another_process_holds(tmp_path):
    """Two sweeps on one store: while one trains a capped run on to the first cap, the other must not train
    that run to the second cap from the searched run's state (the same training twice, and a chain
    without its first link): its job for the group ends claimed, and the holder trains the higher cap."""
    from benchmarks.bench import expand
    from benchmarks.run import continuation_runs, run_group
    from benchmarks.store import Store, run_key

    sweep = tmp_path / "sweep"
    run_group(expand([*CONTINUED, f"store={sweep}"])[0])  # the search, with its run at the cap
    store = Store(str(sweep))
    (job,) = expand([*CONTINUED, f"store={sweep}", "continue_to=[80,120]"])
    ((_, first),) = continuation_runs({**job, "continue_to": 80}, store)
    with store.claim(run_key(first)) as mine:  # as another sweep training it holds it
        assert mine
        out = run_group(job)
    assert [r["key"] for r in out if r["status"] == "claimed"] == [run_key(first)]
    assert {r["config"]["train"]["steps"] for r in store.records()} == {40}  # nothing trained to either cap


def test_continue_to_is_checked_before_anything_trains(tmp_path, capsys):
    from benchmarks.bench import main

    for bad, says in (("continue_to=30", "must exceed train.steps=40"), ("continue_to=0", "positive integer"),
                      ("continue_to=[120,80]", "rising order"), ("continue_to=[80,80]", "rising order"),
                      ("continue_to=[30,80]", "must exceed train.steps=40")):  # fmt: skip
        assert main([*CONTINUED, f"store={tmp_path}", bad]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("configuration error: continue_to:") and says in line, line
    assert main(["preset=smoke", f"store={tmp_path}", "continue_to=100"]) == 2  # no search to continue
    assert not (tmp_path / "records").exists()


def test_backfilled_ess_at_init_equals_what_a_run_records(tmp_path):
    """`benchmarks.backfill` rebuilds a record's initial model from its config and seed: what it fills in
    equals what the run itself measured before training."""
    import json as json_

    from benchmarks.backfill import backfill, missing
    from benchmarks.bench import expand
    from benchmarks.run import run_group
    from benchmarks.store import Store

    overrides = ["preset=smoke", "architecture=mamba", "train.schedule=wsd", "train.rungs=[20]", "train.steps=40",
                 "train.eval_every=20", "data.num_train=null", "architecture.lr_grid=[1e-3,1e-2]", "progress=false",
                 f"store={tmp_path}"]  # fmt: skip
    (cfg,) = expand(overrides)
    measured = {r["key"]: r["metrics"]["ess_at_init"] for r in run_group(cfg)}
    store = Store(str(tmp_path))
    for key in measured:
        record = json_.loads(store.path(key).read_text())
        del record["metrics"]["ess_at_init"]
        store.write(record)
    assert sum(map(len, missing(store).values())) == 2
    assert backfill(store) == 2 and not missing(store)
    for key, ess in measured.items():
        filled = store.get(key)["metrics"]["ess_at_init"]
        assert filled.pop("backfilled") and filled == ess


@pytest.mark.parametrize("kept", ["on-disk", "lost-after-it-started", "lost-before-it-started"])
def test_backfilled_seconds_carried_equal_what_a_continuation_records(tmp_path, monkeypatch, kept):
    """`benchmarks.backfill --carried` infers from the kept states and the records what a continuation
    carried over: it equals what the continuation itself recorded, resumed from its run's kept state (still
    on disk, or lost after it started) or trained from its first step (the state lost before)."""
    import json as json_
    from datetime import datetime, timezone

    from benchmarks import backfill as bf
    from benchmarks.bench import expand
    from benchmarks.run import continue_group, run_group
    from benchmarks.store import Store

    assert bf._descends(bf.CARRIED_SINCE, bf.KEPT_SINCE) and not bf._descends(bf.KEPT_SINCE, bf.CARRIED_SINCE)
    monkeypatch.setattr(bf, "_descends", lambda commit, since: True)  # this test's records come from code that has both
    sweep = tmp_path / "sweep"
    (capped,) = [r for r in run_group(expand([*CONTINUED, f"store={sweep}"])[0]) if r["metrics"]["stopped"] == "budget"]
    state, lost = sweep / "continuable" / f"{capped['key']}.pt", None
    if kept == "lost-before-it-started":  # a record's start is kept to the second
        state.unlink()
        lost = datetime.now(timezone.utc).replace(microsecond=0)
    (cont,) = continue_group(expand([*CONTINUED, f"store={sweep}", "continue_to=80"])[0])
    recorded = cont["metrics"]["continued"]["seconds_carried"]
    assert (recorded > 0) == (kept != "lost-before-it-started")
    if kept == "lost-after-it-started":
        state.unlink()
        lost = datetime.now(timezone.utc)
    store = Store(str(sweep))
    record = json_.loads(store.path(cont["key"]).read_text())
    del record["metrics"]["continued"]["seconds_carried"]
    store.write(record)
    assert [r["key"] for r in bf.uncarried(store)] == [cont["key"]]
    assert bf.backfill_carried(store, lost) == 1 and not bf.uncarried(store)
    filled = store.get(cont["key"])["metrics"]["continued"]
    assert filled.pop("carried_backfilled") and filled["seconds_carried"] == pytest.approx(recorded, abs=0.02)
    with pytest.raises(SystemExit) as exit_:  # a time without its zone: exit 2 naming the option
        bf.main([str(sweep), "--carried", "--kept-states-lost-before", "2026-12-05T21:00"])
    assert exit_.value.code == 2


def test_fresh_batches_are_a_function_of_the_step_and_never_validation_or_test():
    task, data, stream, _ = _setup()
    gen = torch.Generator()
    a, b = stream.batch(7, 8, gen), stream.batch(7, 8, gen)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], stream.batch(8, 8, gen)[0])
    held_out = row_hashes(torch.cat([data.val[0], data.test[0]]))
    seen = set().union(*(row_hashes(stream.batch(s, 8, gen)[0]) for s in range(50)))
    assert not seen & held_out
    assert stream.size is None
