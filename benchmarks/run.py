"""One benchmark run: train a mixer on a task, measure accuracy, ESS, TSS and cache; write one record.

    python -m benchmarks.run architecture=mamba task.num_kv_pairs=16       # one run
    python -m benchmarks.run -m architecture=attention,mamba task.level=0,1   # a Hydra multirun sweep

One run trains at one learning rate, `train.lr` (a sweep, `benchmarks.bench`, trains every
rate of the mixer's `architecture.lr_grid`). With `train.rungs` set, a job is a group instead:
every rate of the grid, searched by successive halving (benchmarks/halving.py), one record per
rate; that is the unit a Hydra launcher schedules and resumes. The config is checked before anything trains: a bad
one exits with one line naming the field and the fix, and writes nothing. A run whose record
already exists is skipped; a crash or a NaN loss during training is recorded as `failed` with the
error, and the caller (a sweep) goes on.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import benchmarks.conf  # noqa: F401 - registers the config schema that @hydra.main composes with
from architectures.backbone import LanguageModel
from architectures.base import cache_bytes, decode
from benchmarks import ess as ess_lib
from benchmarks import halving
from benchmarks import provenance as provenance_lib
from benchmarks.config import (
    ConfigError,
    build_model,
    build_task,
    check_continuation,
    continuation_caps,
    continued_config,
    describe,
    grid_runs,
    has_state,
    mixer_spec,
    single_run,
    validate,
)
from benchmarks.overrides import explain, normalize
from benchmarks.provenance import provenance
from benchmarks.record import PRUNED_IN_A_TIE
from benchmarks.store import Store, group_key, run_key
from benchmarks.train import TrainConfig, TrainData, Trainer, train
from tasks.base import IGNORE, row_hashes


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; use device=cpu or device=auto")
    return device


@torch.no_grad()
def measure_cache(model: LanguageModel, seq_len: int, device: torch.device) -> dict:
    """Bytes of every layer's decoding state after `seq_len` tokens (batch 1), from the tensors held:
    the mixer's layers and any BaseConv layer the backbone added (its k - 1 past inputs)."""
    per_layer = []
    for mixer in (block.mixer for block in model.blocks):
        x = torch.zeros(1, seq_len, mixer.d_model, device=device)
        _, state = decode(mixer, x)
        per_layer.append(cache_bytes(state))
    return {"cache_bytes_per_layer": per_layer, "cache_bytes": sum(per_layer)}


def _data(cfg: dict, task) -> tuple[object, TrainData]:
    """The run's splits and where its training batches come from: `data.num_train` examples, or with
    `data.num_train: null` fresh examples every step, none of them in validation or test."""
    d = cfg["data"]
    data = task.splits(d["num_train"], d["num_val"], d["num_test"], cfg["seed"])
    if d["num_train"] is None:
        exclude = row_hashes(torch.cat([data.val[0], data.test[0]]))
        return data, TrainData(task=task, seed=cfg["seed"], exclude=exclude)
    return data, TrainData(data.train)


def _ess_now(cfg: dict, data, device: torch.device):
    """ESS of a model as it is now, on the validation examples (the test examples measure the trained model)."""
    window = tuple(cfg["ess"]["window"])
    ess_inputs = data.val[0][: cfg["ess"]["num_examples"]].to(device)

    def ess_now(m) -> dict:
        summary = ess_lib.summarize(ess_lib.model_ess(m, ess_inputs), window)
        return {k: summary[k] for k in ("ess_mean", "entropy_ess_mean", "utilization", "ess_mean_by_tolerance")}

    return ess_now


def _ess_over_training(cfg: dict, data, device: torch.device):
    ess_now = _ess_now(cfg, data, device)
    return (lambda m: {"ess": ess_now(m)}) if cfg["ess"].get("over_training", True) else None


def _ess_at_init(cfg: dict, task, data, device: torch.device) -> dict:
    """ESS of the model as initialized (every rate of a group starts from it): beside ESS early in
    training and at the end, it says whether ESS predicts what a model will learn or describes it."""
    torch.manual_seed(cfg["seed"])
    return _ess_now(cfg, data, device)(build_model(cfg, task).to(device))


def _label(cfg: dict, task, lr: float) -> str:
    return f"{mixer_spec(cfg['architecture'])[0]} {task.name} L={task.seq_len} lr={lr:g}"


def execute(cfg: dict, device: torch.device) -> dict:
    """Train one run at `train.lr` to its stop and measure it; returns the metrics of a successful run."""
    torch.manual_seed(cfg["seed"])
    task = build_task(cfg["task"])
    model = build_model(cfg, task)
    train_cfg = TrainConfig(**cfg["train"])
    data, train_data = _data(cfg, task)
    at_init = _ess_now(cfg, data, device)(model.to(device))
    result = train(
        model, train_data, data.val, data.test, train_cfg, device, cfg["seed"], progress=cfg.get("progress", True),
        desc=_label(cfg, task, train_cfg.lr), measure=_ess_over_training(cfg, data, device),
    )  # fmt: skip
    return {**measure_trained(cfg, task, data, model, result, device), "ess_at_init": at_init}


def measure_trained(cfg: dict, task, data, model: LanguageModel, result: dict, device: torch.device) -> dict:
    """A trained run's metrics: its training result, then ESS, TSS and cache of the model as trained."""
    if not all(torch.isfinite(torch.tensor(result[k])) for k in ("accuracy", "loss")):
        raise ArithmeticError(f"evaluation produced non-finite metrics {result['accuracy']}, {result['loss']}")
    window = tuple(cfg["ess"]["window"])
    start = time.perf_counter()
    layers = ess_lib.model_ess(model, data.test[0][: cfg["ess"]["num_examples"]].to(device))
    summary = ess_lib.summarize(layers, window)
    conv_ess = None
    if model.convs:  # the BaseConv layers' own ESS (<= kernel - 1 by construction), kept beside the headline
        examples = data.test[0][: cfg["ess"]["num_examples"]].to(device)
        conv_ess = ess_lib.summarize(ess_lib.model_ess(model, examples, layers="convs"), window)
        conv_ess = {k: conv_ess[k] for k in ("ess_mean", "ess_max", "entropy_ess_mean", "tss", "per_layer")}
    # where a run's time goes: training steps, evaluations, ESS over training, and the final ESS
    seconds = dict(result["seconds"])
    seconds["ess_over_training"] = seconds.pop("measure")
    seconds["final_ess"] = round(time.perf_counter() - start, 2)
    return {
        "accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "val_accuracy": result["val_accuracy"],
        "val_loss": result["val_loss"],
        "steps": result["steps"],
        "best_step": result["best_step"],
        "stopped": result["stopped"],
        # what the run saw and where it ended: a training loss far below the validation loss on a
        # fixed training set says it memorized it
        **{k: result.get(k) for k in ("main_steps", "sequences", "train_set", "final_train_loss", "final_val_loss")},
        "history": result["history"],
        "seconds": seconds,
        "task": {
            "name": task.name,
            "level": cfg["task"].get("level"),
            **task.params(),
            "memory_demand": task.memory_demand,
            "chance_accuracy": task.chance_accuracy,
            "no_recall_accuracy": task.no_recall_accuracy(*data.test),
            "no_recall_rule": task.no_recall_rule,
        },
        "ess": summary,
        "tss": summary["tss"],
        "utilization": summary["utilization"],
        "backbone": cfg["model"]["backbone"],
        "conv_ess": conv_ess,
        # state per channel of every layer, the BaseConv's included: what a recurrence of the whole
        # model must carry (the headline `tss` is the mixer layer's, the bound on its ESS)
        "tss_by_layer": [int(b.mixer.state_size(task.seq_len)) for b in model.blocks],
        "parameters": sum(p.numel() for p in model.parameters()),
        **measure_cache(model, task.seq_len, device),
        "kernels": sorted({m.kernel for m in model.mixers}),
    }


def run_group(cfg: dict, check: bool = True) -> list[dict]:
    """Train a group (one config at every rate of its grid) by successive halving
    (`benchmarks.halving.search`, `train.rungs`) unless its records exist; returns its records. The
    unit of work a sweep schedules: resumable from checkpoints `<store>/checkpoints/<key>.pt`, saved
    after every stretch of training and removed once the group's records are written. With
    `continue_to` (a cap, or rising caps), the group is searched first where it has not been, then the
    runs its search ended at the cap are trained further to each cap in turn (`continue_group`), so a
    group's job ends with the group converged or at the last cap, and each continuation resumes from
    the state its run left on this machine while the job runs (where another process holds a run's
    continuation to a lower cap, the higher caps are left to it); returns the search's records and the
    continuations'."""
    if caps := continuation_caps(cfg):
        searched = run_group({**cfg, "continue_to": None}, check)
        out = searched
        for cap in caps:
            if any(r["status"] == "claimed" for r in out):
                # another process trains a run on to a lower cap: a higher cap continues from its result,
                # so that process, not this one, trains the higher caps (else the same run twice)
                return out
            out = out + continue_group({**cfg, "continue_to": cap}, check)
        return out
    runs = grid_runs(cfg)
    if not runs:
        return []
    store = Store(runs[0]["store"])
    records, complete = group_records(runs, store)
    if complete:
        return records
    if check:
        for r in runs:
            validate(r)
    gkey = group_key(runs[0])
    with store.claim(gkey) as mine:
        if not mine:
            why = f"being trained by another process ({store.records_dir})"
            return [{"key": run_key(r), "config": r, "status": "claimed", "error": why} for r in runs]
        return _search_and_record(runs, store)


def _at_rate(base: dict, lr: float) -> dict:
    return {**copy.deepcopy(base), "train": {**base["train"], "lr": lr}}


def group_records(runs: list[dict], store: Store) -> tuple[list[dict], bool]:
    """A group's records and whether it is complete: every rate its search tried (`search.rates`, the
    grid and any extension) has a record. A sweep killed between two record writes leaves a group
    incomplete; its search is then replayed from the checkpoints and only the missing records written."""
    found = {rec["key"]: rec for r in runs if (rec := store.get(run_key(r))) is not None}
    if not found:
        return [], False
    first = next(iter(found.values()))
    search = first.get("metrics", {}).get("search") or first.get("search") or {}  # a failed run's is top-level
    tried = {run_key(_at_rate(runs[0], lr)) for lr in search.get("rates", [])}
    found |= {k: rec for k in sorted(tried - found.keys()) if (rec := store.get(k)) is not None}
    return list(found.values()), tried <= found.keys()


def _checkpoint_path(store: Store, key: str) -> Path:
    return store.root / "checkpoints" / f"{key}.pt"


def _continuable_path(store: Store, key: str) -> Path:
    """A run that ended at the cap, as it was before its cooldown: where `continue_to` resumes it."""
    return store.root / "continuable" / f"{key}.pt"


def trained_by(earlier: list[dict], until: int) -> list[dict]:
    """Who trained a run's steps: `earlier` (the stretches of the state it resumed from, each
    `{until, commit, cpu}`, the CPU's identity) and this process's, to step `until`. A stretch under
    the same commit on the same CPU as the one before it extends it; so one stretch means one code on
    one kind of CPU trained every step (the record's provenance says which)."""
    here = provenance_lib.who_trains()
    if earlier and {k: earlier[-1].get(k) for k in here} == here:
        return [*earlier[:-1], {"until": until, **here}]
    return [*earlier, {"until": until, **here}]


def _save(path: Path, trainer: Trainer, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {**trainer.state_dict(), **extra}
    torch.save({**state, "trained_by": trained_by(state["trained_by"], state["step"])}, tmp)
    os.replace(tmp, path)


def _name_who_trained(record: dict, trainer: Trainer, steps: int) -> None:
    """A run resumed from a state that another commit or CPU trained: its provenance lists who trained
    which steps (`provenance.trained_by`); its commit and cpu name only the process that finished it."""
    if len(stretches := trained_by(trainer.trained_by, steps)) > 1:
        record["provenance"]["trained_by"] = stretches


def _load(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint: train this run anew
        print(f"checkpoint {path} unreadable ({type(e).__name__}); training it anew", file=sys.stderr)
        return None


def _trainer(cfg: dict, task, data, train_data: TrainData, device: torch.device, measure) -> Trainer:
    """A Trainer for the run `cfg`, its model built from the run's seed (every rate of a group, and a
    continuation, start from one initialization)."""
    torch.manual_seed(cfg["seed"])
    return Trainer(
        build_model(cfg, task), train_data, data.val, TrainConfig(**cfg["train"]), device, cfg["seed"],
        progress=cfg.get("progress", True), desc=_label(cfg, task, cfg["train"]["lr"]), measure=measure,
    )  # fmt: skip


def _failed(record: dict, e: BaseException) -> None:
    """Mark `record` failed with the error and its traceback (a run's failure is recorded; the sweep goes on)."""
    record["status"], record["error"] = "failed", f"{type(e).__name__}: {e}"
    record["traceback"] = "".join(traceback.format_exception(e, limit=8))


def _search_and_record(runs: list[dict], store: Store) -> list[dict]:
    base = runs[0]
    device = resolve_device(base.get("device", "auto"))
    task = build_task(base["task"])
    data, train_data = _data(base, task)
    measure = _ess_over_training(base, data, device)
    at_init = _ess_at_init(base, task, data, device)
    train_cfg = TrainConfig(**base["train"])
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    clock = time.time()

    def config_at(lr: float) -> dict:
        return _at_rate(base, lr)

    def make(lr: float) -> Trainer:
        cfg = config_at(lr)
        trainer = _trainer(cfg, task, data, train_data, device, measure)
        if (state := _load(_checkpoint_path(store, run_key(cfg)))) is not None:
            trainer.load_state_dict(state)
        return trainer

    def saved(lr: float, trainer: Trainer) -> None:
        _save(_checkpoint_path(store, run_key(config_at(lr))), trainer)

    rates = [r["train"]["lr"] for r in runs]
    budgets = [*train_cfg.rungs, train_cfg.steps]
    extend = base["train"].get("extend", 0)
    result, trainers = halving.search(rates, make, budgets, train_cfg.promote, extend, saved, _stretch(train_cfg))
    records = []
    for lr in result.rates:
        if lr not in trainers and lr not in result.errors:
            continue  # a rate the search never trained (the task was solved first)
        cfg = config_at(lr)
        if (written := store.get(run_key(cfg))) is not None:  # written before the group was interrupted
            records.append(written)
            continue
        record = _new_record(cfg, run_key(cfg), device, started)
        try:
            if lr in result.errors:
                raise result.errors[lr]
            outcome = trainers[lr].finish(data.test, stopped=result.ended[lr])
            metrics = measure_trained(cfg, task, data, trainers[lr].model, outcome, device)
            record["metrics"] = {**metrics, "ess_at_init": at_init, "search": result.summary(lr)}
            record["status"] = "ok"
            _name_who_trained(record, trainers[lr], metrics["steps"])
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the group goes on
            _failed(record, e)
            record["search"] = result.summary(lr)
        record["wall_time_s"] = round(time.time() - clock, 2)  # the group's, shared by its runs
        store.write(record)
        records.append(record)
        if record["status"] == "ok" and record["metrics"]["stopped"] == "budget":
            _save(_continuable_path(store, record["key"]), trainers[lr])  # its state before the cooldown
    for lr in result.rates:
        _checkpoint_path(store, run_key(config_at(lr))).unlink(missing_ok=True)
    return records


# a run saves its checkpoint every this many steps (a killed sweep loses at most that much of a run)
CHECKPOINT_STEPS = 4000


def _stretch(train: TrainConfig) -> int:
    """CHECKPOINT_STEPS rounded up to a multiple of the evaluation interval: a pause between stretches
    then falls on an evaluation step, so it adds none (the Trainer evaluates wherever it pauses) and the
    run equals the one trained without pauses."""
    return -(-CHECKPOINT_STEPS // train.eval_every) * train.eval_every


def continuations(store: Store) -> dict[str, list[dict]]:
    """Every successful continuation in `store`, by the key of the run it trains further (`continues`):
    read once, for every group a sweep continues."""
    out: dict[str, list[dict]] = {}
    for r in store.records():
        if r.get("status") == "ok" and r.get("continues"):
            out.setdefault(r["continues"], []).append(r)
    return out


def _chain(record: dict, by_run: dict[str, list[dict]]) -> list[dict]:
    """Every continuation that trains `record` further, and theirs."""
    out = []
    for c in by_run.get(record["key"], []):
        out += [c, *_chain(c, by_run)]
    return out


def _furthest_before(record: dict, steps: int, by_run: dict[str, list[dict]]) -> dict:
    """The last link of `record`'s chain of continuations (`continues`) whose cap lies below `steps`: the
    run that a continuation to `steps` trains further (a cap raised twice resumes from the second)."""
    while later := [c for c in by_run.get(record["key"], []) if c["config"]["train"]["steps"] < steps]:
        record = max(later, key=lambda c: c["config"]["train"]["steps"])
    return record


def _scored_in_validation(cfg: dict) -> int:
    """How many positions the run's validation split scores: the n of its validation accuracy."""
    data, _ = _data(cfg, build_task(cfg["task"]))
    return int((data.val[1] != IGNORE).sum())


def _pruned_in_a_tie(record: dict, records: list[dict], scored) -> bool:
    """Whether the search pruned `record` at a rung in a tie with a rate it promoted there
    (`halving.tied`); `scored()`: the validation split's scored positions."""
    search, m = record["metrics"].get("search") or {}, record["metrics"]
    rung = search.get("rung", -1)
    if m["stopped"] != "pruned" or not 0 <= rung < len(search.get("rungs", [])) - 1:
        return False
    curve = lambda r: SimpleNamespace(history=r["metrics"].get("history", []))  # noqa: E731
    promoted = [r for r in records if r.get("status") == "ok" and (r["metrics"].get("search") or {}).get("rung", -1) > rung]
    return any(halving.tied(curve(record), curve(r), search["rungs"][rung], scored()) for r in promoted)


def continuation_runs(cfg: dict, store: Store, by_run: dict[str, list[dict]] | None = None) -> list[tuple[dict, dict]] | None:
    """What `continue_to` trains further in `cfg`'s group: each run that ended at the cap (`metrics.stopped`
    "budget": it never stopped improving for a plateau's window) and, where no run of the group solved the
    task, each rate the search pruned in a tie with one it promoted (`halving.tied`: their validation
    accuracies within sampling noise, the pruned run's loss the lower); or, where an earlier `continue_to`
    below this one trained such a run further, that continuation. As (that record, the config of the run
    continued: the searched run with `train.steps` = `continue_to` and no rungs, which trains the same
    first steps under the WSD schedule). None while the group's search has not written all its records.
    `by_run`: the store's `continuations`, where the caller has read them already."""
    runs = grid_runs(cfg)  # the searched runs: a run has no continue_to (single_run)
    records, complete = group_records(runs, Store(cfg["store"]))
    if not complete:
        return None
    by_run = continuations(store) if by_run is None else by_run
    chains = [r for root in records for r in [root, *_chain(root, by_run)]]
    solved = any(r.get("status") == "ok" and r["metrics"]["stopped"] == "solved" for r in chains)
    scored = functools.cache(lambda: _scored_in_validation(runs[0]))
    out = []
    for record in sorted(records, key=lambda r: r["config"]["train"]["lr"]):
        if record.get("status") != "ok":
            continue
        if record["metrics"]["stopped"] != "budget" and (solved or not _pruned_in_a_tie(record, records, scored)):
            continue
        parent = _furthest_before(record, cfg["continue_to"], by_run)
        if parent is not record and parent["metrics"]["stopped"] != "budget":  # a continuation solved it or found its plateau
            continue
        searched = _at_rate(runs[0], record["config"]["train"]["lr"])  # a rate the search added included
        out.append((parent, continued_config(searched, cfg["continue_to"])))
    return out


def continue_group(cfg: dict, check: bool = True) -> list[dict]:
    """Train further, to `continue_to` steps, each run of `cfg`'s group that its search ended at the
    cap (`continuation_runs`), unless its continuation's record exists; returns those records (none
    while the group's search is unfinished, or when no run reached the cap). Each continues from the
    run's state before its cooldown (`<store>/continuable/<key>.pt`, kept when the group's records
    were written) or, without it, trains the same run again from its first step; the record joins the
    group (`group`) and names the run it continues (`continues`), which the page's row then replaces."""
    check_continuation(cfg)
    store = Store(cfg["store"])
    out = []
    for parent, run in continuation_runs(cfg, store) or []:
        key = run_key(run)
        if (record := store.get(key)) is not None:
            out.append(record)
            continue
        if check:
            validate(run)
        with store.claim(key) as mine:
            if not mine:
                why = f"being trained by another process ({store.records_dir})"
                out.append({"key": key, "config": run, "status": "claimed", "error": why})
                continue
            out.append(store.get(key) or _continue_and_record(parent, run, store))
    return out


def _continued(parent: dict) -> dict:
    """What a continuation's record says of the run it trains further: its key, the steps that run had
    trained before its cooldown (`cap`: its cap, or the rung a tie pruned it at) and `why`."""
    m = parent["metrics"]
    why = PRUNED_IN_A_TIE if m["stopped"] == "pruned" else "cap"
    return {"run": parent["key"], "cap": m.get("main_steps", parent["config"]["train"]["steps"]), "why": why}


def _resumable_state(parent: dict, store: Store) -> dict | None:
    """The kept state (before its cooldown) of `parent` or, where it is gone, of the nearest run before it
    in its chain of continuations; None where none was kept (the run is then trained from its first step)."""
    key = parent["key"]
    while key is not None:
        if (state := _load(_continuable_path(store, key))) is not None:
            return state
        key = (store.get(key) or {}).get("continues")
    return None


def _seconds_of(state: dict | None) -> float:
    """The time a kept trainer state had spent (training, evaluating, measuring): what a run resumed from
    it carries over."""
    return float(sum(state["seconds"].values())) if state is not None else 0.0


def _continue_and_record(parent: dict, cfg: dict, store: Store) -> dict:
    key = run_key(cfg)
    device = resolve_device(cfg.get("device", "auto"))
    record = _new_record(cfg, key, device, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    record["group"], record["continues"] = parent["group"], parent["key"]
    clock = time.time()
    try:
        task = build_task(cfg["task"])
        data, train_data = _data(cfg, task)
        trainer = _trainer(cfg, task, data, train_data, device, _ess_over_training(cfg, data, device))
        own = _checkpoint_path(store, key)
        if (state := _load(own)) is not None:
            trainer.load_state_dict(state)
            carried = state["seconds_carried"] if "seconds_carried" in state else _seconds_of(_resumable_state(parent, store))
        elif (state := _resumable_state(parent, store)) is not None:
            # the cap is lifted; the seconds carried over make the record's time the whole run's, as if
            # trained straight through, and `seconds_carried` says how many an earlier record spent
            trainer.load_state_dict({**state, "stopped": None})
            carried = _seconds_of(state)
        else:
            carried = 0.0  # trained from its first step
        for until in halving.stretches(trainer, trainer.cfg.steps, _stretch(trainer.cfg)):
            if trainer.advance(until) is None:
                _save(own, trainer, seconds_carried=carried)
        metrics = measure_trained(cfg, task, data, trainer.model, trainer.finish(data.test), device)
        at_init, search = parent["metrics"].get("ess_at_init"), parent["metrics"].get("search")
        continued = {**_continued(parent), "seconds_carried": round(carried, 2)}
        record["metrics"] = {**metrics, "ess_at_init": at_init, "search": search, "continued": continued}
        record["status"] = "ok"
        _name_who_trained(record, trainer, metrics["steps"])
    except KeyboardInterrupt:
        raise  # no record: the resumed sweep continues it from its checkpoint
    except Exception as e:  # noqa: BLE001 - a failed continuation is recorded; the parent's row stays
        _failed(record, e)
    record["wall_time_s"] = round(time.time() - clock, 2)
    store.write(record)
    if record["status"] == "ok" and record["metrics"]["stopped"] == "budget":
        _save(_continuable_path(store, key), trainer)
    _checkpoint_path(store, key).unlink(missing_ok=True)
    return record


def run_one(cfg: dict, force: bool = False, check: bool = True) -> dict:
    """Run `cfg` (one learning rate) unless its record exists; always returns the (new or existing)
    record. The config is validated first (`check=False` when the caller already did): a bad one
    raises ConfigError and writes nothing; only failures during training become `failed` records."""
    cfg = single_run(cfg)
    store = Store(cfg["store"])
    key = run_key(cfg)
    if not force and (record := store.get(key)) is not None:
        return record
    if check:
        validate(cfg)
    with store.claim(key) as mine:
        if not mine:  # another sweep on this store is training it: its record will land there
            why = f"being trained by another process ({store.records_dir})"
            return {"key": key, "config": cfg, "status": "claimed", "error": why}
        if not force and (record := store.get(key)) is not None:  # it finished while this process got here
            return record
        return _train_and_record(cfg, key, store)


def _new_record(cfg: dict, key: str, device: torch.device, started: str) -> dict:
    return {
        "key": key, "group": group_key(cfg), "config": cfg, "seed": cfg["seed"], "started": started,
        "provenance": provenance(device),
    }  # fmt: skip


def _train_and_record(cfg: dict, key: str, store: Store) -> dict:
    device = resolve_device(cfg.get("device", "auto"))
    start = time.time()
    record = _new_record(cfg, key, device, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        record["metrics"] = execute(cfg, device)
        record["status"] = "ok"
    except KeyboardInterrupt:
        raise  # an interrupted run leaves no record: the resumed sweep runs it again
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
        _failed(record, e)
    record["wall_time_s"] = round(time.time() - start, 2)
    store.write(record)
    return record


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for k in ("preset", "sweep_progress"):
        resolved.pop(k, None)
    try:
        if not has_state(resolved):  # a sweep's state=1 for a mixer with fewer sizes (attention has none)
            print(f"[skip] {describe(resolved)}: its mixer has no state size {resolved['state']}")
            return
        check_continuation(resolved)
        records = run_group(resolved) if resolved["train"].get("rungs") else [run_one(resolved)]
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        sys.exit(2)
    for record in records:
        acc = record.get("metrics", {}).get("accuracy")
        print(f"[{record['status']}] {record['key']} accuracy={acc} -> {Store(resolved['store']).path(record['key'])}")
        if record["status"] != "ok":
            print(record["error"])
    if not records or any(r["status"] != "ok" for r in records):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.RUN:  # one run: say it failed; a multirun goes on to the next
            sys.exit(1)


def check_composes(overrides: list[str]) -> None:
    """Compose the config before Hydra's main does, so a typo or a value of the wrong type exits with one
    line naming the key; a multirun's sweep overrides (a,b,c) one value at a time."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    given = [o for o in overrides if not o.startswith(("-", "hydra"))]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        sweeps = [o for o in parsed if o.is_sweep_override()]
        if sweeps and not {"-m", "--multirun"} & set(overrides):
            print(f"configuration error: {sweeps[0].input_line} sweeps several values; add -m to run each", file=sys.stderr)
            sys.exit(2)
        trials = [fixed] + [[*fixed, f"{o.get_key_element()}={v}"] for o in sweeps for v in o.sweep_string_iterator()]
        with initialize_config_module("benchmarks.conf", version_base="1.3"):
            for trial in trials:
                compose("config", overrides=trial)
    except (HydraException, OmegaConfBaseException) as e:
        print(f"configuration error: {explain(e, overrides)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *normalize(sys.argv[1:])]
    check_composes(sys.argv[1:])
    main()
