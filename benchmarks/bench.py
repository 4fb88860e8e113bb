"""The sweep driver behind `nox -s bench`: every run of a preset, with progress, resumable.

    python -m benchmarks.bench                       # preset=default, into runs/default
    python -m benchmarks.bench preset=smoke store=/tmp/smoke
    python -m benchmarks.bench architecture=mamba    # narrow the preset's sweep
    python -m benchmarks.bench reference=results/default   # compare with another store (reference=: none)

The sweep is the preset's `hydra.sweeper.params` (the same grid that
`python -m benchmarks.run -m preset=...` hands to a Hydra launcher), expanded
by Hydra's own sweeper; overrides on the command line replace the preset's
values. Each group is trained at every learning rate of its mixer's
`architecture.lr_grid`. Every run is validated before the first one trains (a
bad combination exits with one line saying which, and nothing is written).
`workers=N` runs N processes, each with its share of the CPU threads, and
prints a line as each run or group starts (their progress bars would overwrite
each other; `progress=false`: only a line as each ends). Runs whose records
exist are skipped, so a second call only rebuilds the leaderboard. Failed runs
are recorded and the sweep goes on. Ctrl-C stops the runs in progress (no
record is written for them; a group keeps its checkpoints) and starts no other;
the same command resumes the sweep. A finished sweep is compared, row by
row, with its preset's committed reference (`REFERENCES`; `reference=<store>` names another): each
row's accuracy and ESS beside the reference's, then one line saying whether it reproduced within
seed noise (`ACCURACY_NOISE`, `ESS_NOISE`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from architectures import registry
from benchmarks import analysis, leaderboard
from benchmarks.config import (
    ConfigError,
    check_continuation,
    continuation_caps,
    describe,
    grid_runs,
    mixer_spec,
    single_run,
    validate,
)
from benchmarks.overrides import explain, normalize, wants_help
from benchmarks.provenance import git_state
from benchmarks.report.columns import continued_from
from benchmarks.run import continuation_runs, continuations, group_records, run_group, run_one
from benchmarks.store import Store, group_key, run_key


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def expand(overrides: list[str]) -> list[dict]:
    """Resolved configs of every run of the sweep defined by the preset plus `overrides`."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        hydra_cfg = compose("config", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params or {}, resolve=True)  # ${mixers:}
        given = {_key_of(o) for o in overrides}
        grid = [f"{k}={v}" for k, v in params.items() if k not in given] + list(overrides)
        parsed = parser.parse_overrides(grid)
        jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
        configs = []
        for job in jobs:
            cfg = OmegaConf.to_container(compose("config", overrides=job), resolve=True)
            cfg.pop("preset", None)
            configs.append(cfg)
    return configs


# overrides that say where or how to run, not which runs: a sweep with only these is its preset's
WHERE_KEYS = {"store", "progress", "workers", "device", "preset"}


def write_plan(store: Store, overrides: list[str], configs: list[dict]) -> Path | None:
    """`<store>/plans/<preset>.json`: the keys of every run the preset plans, so the page can say how
    many of them the store holds. Only for a whole preset (a narrowed sweep plans no coverage)."""
    if any(_key_of(o) not in WHERE_KEYS for o in overrides):
        return None
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        name = compose("config", overrides=[o for o in overrides if _key_of(o) == "preset"]).get("preset") or "sweep"
    path = store.root / "plans" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [run_key(single_run(c)) for c in configs]
    path.write_text(json.dumps({"preset": name, "runs": len(keys), "keys": keys}, indent=1) + "\n")
    return path


def load_code() -> None:
    """Import every reference mixer now, then fix the provenance (commit, dirty) at this moment: the
    code a process runs is the code its records name even if the tree changes while a sweep runs
    (the registry otherwise imports a mixer at its first run, which may come hours later)."""
    for name in registry.names():
        try:
            registry.resolve(name)
        except Exception:  # noqa: BLE001 - a mixer that cannot load fails its own runs, with its error
            pass
    git_state()


_INTERRUPTED = False  # a worker's: Ctrl-C reached it, so it starts nothing more
_BUSY = False  # a worker's: it is training a run or group


def _on_interrupt(signum, frame) -> None:
    """A worker's SIGINT handler: stop the run or group it is training (KeyboardInterrupt: no record, the
    claim released, checkpoints kept) and start no other. Once only: the sweep forwards Ctrl-C to its
    workers, which the terminal may have sent them already."""
    global _INTERRUPTED
    _INTERRUPTED = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _BUSY:
        raise KeyboardInterrupt


def _init_worker(parent: int) -> None:
    """Pool initializer: a worker exits when the sweep's process does (killed), instead of training on,
    orphaned; Ctrl-C stops it (`_on_interrupt`); and it loads its code at once."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    signal.signal(signal.SIGINT, _on_interrupt)
    load_code()


def _in_worker(fn, cfg: dict, threads: int):
    """`fn` (run_one or run_group) in a worker, unless Ctrl-C has reached it."""
    global _BUSY
    if _INTERRUPTED:
        raise KeyboardInterrupt
    torch.set_num_threads(threads)
    _BUSY = True
    try:
        return fn({**cfg, "progress": False}, check=False)
    finally:
        _BUSY = False


class Interrupted(Exception):
    """Ctrl-C stopped the sweep; the message says what was stopped and how to resume."""


def _interrupted(unit: str, running: int, waiting: int) -> Interrupted:
    resume = "from their checkpoints" if unit == "group" else "from the start"
    return Interrupted(
        f"interrupted: {_count(running, unit)} stopped while training, {waiting} not started; nothing of them is recorded, "
        f"and the same command resumes the sweep (stopped {unit}s {resume})"
    )


GRACE_S = 30  # how long an interrupted worker may take to stop before it is terminated


def _in_pool(fn, todo: list[dict], workers: int, threads: int, unit: str, started, done, recorded) -> None:
    """`fn(cfg, check=False)` for every config of `todo` in `workers` processes, one at a time each: nothing
    waits in a queue behind a running one, so Ctrl-C starts nothing new. `started(cfg)` as a config goes
    to a worker, `done(cfg, result)` as it finishes. Ctrl-C (to the sweep, its process group or its
    workers) stops the running ones and raises Interrupted; one stopped after its records were written
    (`recorded(cfg)`: the stored result, or None) counts as done."""
    context = multiprocessing.get_context("spawn")
    waiting, running = list(todo), {}
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                cfg = waiting.pop(0)
                running[pool.submit(_in_worker, fn, cfg, threads)] = cfg
                started(cfg)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                if isinstance(future.exception(), KeyboardInterrupt):  # Ctrl-C reached a worker before this process
                    raise KeyboardInterrupt  # with the future still running: counted as stopped
                done(running.pop(future), future.result())
    except KeyboardInterrupt:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the workers are being stopped: a second Ctrl-C changes nothing
        for process in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
        wait(running, timeout=GRACE_S)
        if not all(f.done() for f in running):  # a worker deaf to SIGINT (inside one long kernel call)
            for process in multiprocessing.active_children():
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        signal.signal(signal.SIGINT, previous)  # by now this process's own Ctrl-C, if it was sent one, has landed
        stopped = 0
        for future, cfg in running.items():
            finished = future.done() and not future.cancelled() and future.exception() is None
            if (result := future.result() if finished else recorded(cfg)) is None:
                stopped += 1
            else:
                done(cfg, result)
        raise _interrupted(unit, stopped, len(waiting)) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _work(fn, todo: list[dict], workers: int, threads: int, unit: str, done, recorded) -> None:
    """`fn` (run_one or run_group) over `todo`: in this process one after another, or in a pool of
    `workers` (`_in_pool`); `done(cfg, result)` as each finishes. Ctrl-C raises Interrupted."""
    if workers > 1:
        return _in_pool(fn, todo, workers, threads, unit, lambda cfg: _started(cfg, workers), done, recorded)
    load_code()
    for i, cfg in enumerate(todo):
        try:
            result = fn(cfg, check=False)
        except KeyboardInterrupt:
            stopped = recorded(cfg) is None  # not when stopped just after writing its records
            raise _interrupted(unit, int(stopped), len(todo) - i - 1) from None
        done(cfg, result)


def _groups(overrides: list[str]) -> list[dict]:
    """The sweep's groups (each config with its learning-rate grid), for presets that search the grid
    by successive halving (`train.rungs`): a group is their unit of work."""
    return [g for g in expand(overrides) if grid_runs(g)]


def _group_line(records: list[dict]) -> str:
    """One line for a finished group: mixer, setting, its best rate on validation and how it ended."""
    trained_further = {r.get("continues") for r in records}
    ok = [r for r in records if r["status"] == "ok" and r["key"] not in trained_further]  # the group's rows
    where = _coordinates(records[0]["config"], lr=False) if records else "?"
    if not ok:
        return f"{where}: every run failed ({records[0].get('error', '?') if records else 'no records'})"
    best = max(ok, key=lambda r: r["metrics"]["val_accuracy"])
    m = best["metrics"]
    searched, failed = sum(not r.get("continues") for r in records), sum(r["status"] == "failed" for r in records)
    rates = f"continued: {continued_from(m['continued'])}" if m.get("continued") else f"{searched} rates"
    return (f"{where}: best lr={best['config']['train']['lr']:g} accuracy={m['accuracy']:.3f} "
            f"({m['stopped']} after {m['steps']} steps); {rates}, {failed} failed")  # fmt: skip


def _started(cfg: dict, workers: int) -> None:
    """With several workers, one line as a run or group starts: their progress bars would overwrite each
    other, so they are off (`progress=false` leaves only the lines of finished ones)."""
    if workers > 1 and cfg.get("progress", True):
        runs = grid_runs(cfg)
        what = _coordinates(runs[0], lr=len(runs) == 1) + (f" ({len(runs)} rates)" if len(runs) > 1 else "")
        print(f"started {what}", flush=True)


def _coordinates(cfg: dict, lr: bool = True) -> str:
    """A run's mixer (with its state size), task setting and rate, e.g. `mamba d_state=16 mqar L=64, kv=4 lr=0.003`."""
    mixer, arch = mixer_spec(cfg["architecture"])
    knob = analysis.state_knob_name(mixer)
    state = f"{knob}={arch[knob]}" if knob and arch.get(knob) is not None else ""
    task = cfg["task"]
    known = "seq_len" in task and (task.get("name") != "mqar" or "num_kv_pairs" in task)
    setting = analysis._setting(task) if known else (f"level={task['level']}" if task.get("level") is not None else "")
    return " ".join(s for s in (mixer, state, task.get("name", "?"), setting, f"lr={cfg['train']['lr']:g}" if lr else "") if s)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _run_line(record: dict) -> str:
    """How a finished run ended: its accuracy and stop, or its error."""
    if record["status"] == "claimed":
        return f"skipped: {record['error']}"
    if record["status"] != "ok":
        return f"failed: {record.get('error', '?')}"
    m = record["metrics"]
    return f"accuracy {m['accuracy']:.3f} ({m['stopped']} after {m['steps']} steps, {record.get('wall_time_s', 0):.0f} s)"


# The committed reference of a preset whose own store is local (runs/, ignored): what its sweep reproduces.
REFERENCES = {"default": "results/default"}
ROOT = Path(__file__).resolve().parent.parent
# Seed noise, from the three-seed replicates of the 2,000-step protocol (MQAR L 64, kv 8, nine designs): seven of
# nine have a test-accuracy range below 0.06 and an ESS range within 35% of their mean ESS (docs/sweeps.md).
ACCURACY_NOISE = 0.06
ESS_NOISE = 0.35


def _setting_key(cfg: dict) -> str:
    """What a row of the sweep and a row of the reference must share: the mixer, task, model, data, ESS
    settings and seed (training configs are compared separately, and where they differ the check says so)."""
    return run_key({k: v for k, v in cfg.items() if k != "train"})


def _best_by_setting(records: list[dict]) -> dict[str, dict]:
    """`_setting_key` -> the best row over the learning-rate grid (chosen on validation), with its config."""
    runs = analysis.run_rows(records)
    if runs.empty:
        return {}
    configs = {r["key"]: r["config"] for r in records}
    best = analysis.best_rows(runs, analysis.incomplete_groups(records))
    return {_setting_key(configs[row["key"]]): {**row.to_dict(), "config": configs[row["key"]]} for _, row in best.iterrows()}


def compare(records: list[dict], reference: list[dict], reference_name: str) -> list[str]:
    """Every row of the sweep (mixer x setting, its best rate on validation) beside the reference's row of the
    same configuration: accuracy and ESS with their differences; then the reproduction verdict in one line."""
    mine, ref = _best_by_setting(records), _best_by_setting(reference)
    lines = [
        f"reproduction check against {reference_name} (each row: its best rate on validation):",
        f"{'mixer':<32}{'setting':<12}{'lr':>7}{'ref':>7}{'accuracy':>10}{'ref':>7}{'diff':>8}{'ESS':>8}{'ref':>7}{'diff':>7}",
    ]
    within, outside, missing, differs = 0, [], 0, set()
    order = sorted(mine.items(), key=lambda kv: (kv[1]["task"], kv[1]["seq_len"], kv[1]["memory_demand"], kv[1]["mixer"]))
    for key, row in order:
        name = " ".join(s for s in (row["mixer"], row["state"]) if s)
        if key not in ref:
            missing += 1
            lines.append(
                f"{name:<32}{row['setting']:<12}{row['lr']:>7g}{'':>7}{row['accuracy']:>10.3f}{'':>15}{row['ess']:>8.2f}"
                "   no reference row"
            )
            continue
        other = ref[key]
        head = f"{name:<32}{row['setting']:<12}{row['lr']:>7g}{other['lr']:>7g}{row['accuracy']:>10.3f}"
        train, other_train = row["config"]["train"], other["config"]["train"]
        differs |= {k for k in set(train) | set(other_train) if k != "lr" and train.get(k) != other_train.get(k)}
        d_acc, d_ess = row["accuracy"] - other["accuracy"], row["ess"] - other["ess"]
        ok = abs(d_acc) <= ACCURACY_NOISE and abs(d_ess) <= ESS_NOISE * other["ess"]
        within += ok
        if not ok:
            outside.append(f"{row['mixer']} {row['setting']} ({d_acc:+.3f} accuracy, {d_ess:+.2f} ESS)")
        lines.append(
            f"{head}{other['accuracy']:>7.3f}{d_acc:>+8.3f}{row['ess']:>8.2f}{other['ess']:>7.2f}{d_ess:>+7.2f}"
            + ("" if ok else "  outside seed noise")
        )
    if differs:
        keys = ", ".join(f"train.{k}" for k in sorted(differs))
        lines.append(f"rows matched by mixer, task, model, data and seed; the training configs differ in {keys}")
    compared = within + len(outside)
    noise = f"|accuracy diff| <= {ACCURACY_NOISE} and |ESS diff| <= {ESS_NOISE:.0%} of the reference's"
    unmatched = f"; {_count(missing, 'row')} without a reference row" if missing else ""
    if not compared:
        lines.append(f"not checked: no row of this sweep has a reference row in {reference_name}")
    elif not outside:
        every = "all " if compared > 1 else ""
        lines.append(f"reproduced within seed noise: {every}{_count(compared, 'row')} compared ({noise}){unmatched}")
    else:
        lines.append(
            f"not reproduced within seed noise: {len(outside)} of {_count(compared, 'row')} outside it ({noise}): "
            f"{'; '.join(outside)}{unmatched}"
        )
    return lines


def check(overrides: list[str], given: str | None, store: Store, configs: list[dict]) -> None:
    """Print the sweep's reproduction check against `reference=` if given (empty: none), else against the
    preset's committed reference (`REFERENCES`, in this repository), if it has one."""
    if given is None:
        preset = next((o.split("=", 1)[1] for o in overrides if _key_of(o) == "preset"), "default")
        given = str(ROOT / REFERENCES[preset]) if preset in REFERENCES else ""
    if not given or Path(given).resolve() == store.root.resolve():
        return
    reference = Store(given)
    if not reference.records_dir.is_dir():
        print(f"no reproduction check: {reference.records_dir} does not exist")
        return
    keys = {run_key(single_run(c)) for c in configs}  # this sweep's runs, not older ones the store may hold
    shown = reference.root
    if shown.is_absolute() and not os.path.relpath(shown).startswith(".."):  # the committed one: results/default
        shown = Path(os.path.relpath(shown))
    print("\n".join(compare([r for r in store.records() if r["key"] in keys], reference.records(), str(shown))))


def plan(overrides: list[str]) -> list[dict]:
    """Every run of the sweep (each group at every rate of its grid), all validated: raises
    ConfigError naming the first bad combination before anything trains."""
    configs = []
    for group in expand(overrides):
        check_continuation(group)  # the sweep's, not one group's
        try:
            runs = grid_runs(group)
        except ConfigError as e:
            raise ConfigError(f"[{describe(group)}] {e}") from None
        configs += runs
    for cfg in configs:
        try:
            validate(cfg)
        except ConfigError as e:  # name the run only where the error is its own, not the whole sweep's
            own = str(e).startswith(("architecture", "task", "model", "state"))
            raise ConfigError(f"[{describe(cfg)}] {e}" if own else str(e)) from None
    return configs


USAGE = "python -m benchmarks.bench [preset=NAME] [reference=STORE] [KEY=VALUE ...]  (Hydra overrides of benchmarks/conf)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args, USAGE, __doc__):
        return 0
    given = next((a.split("=", 1)[1] for a in args if a.startswith("reference=")), None)
    overrides = normalize([a for a in args if not a.startswith("reference=")])
    try:
        configs = plan(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        print(f"configuration error: {explain(e, overrides)}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
    if not configs:
        print("nothing to run")
        return 0
    store = Store(configs[0]["store"])
    write_plan(store, overrides, configs)
    try:
        sweep = _sweep_groups if configs[0]["train"].get("rungs") else _sweep_runs
        return sweep(overrides, configs, store, given)
    except Interrupted as e:
        print(e, file=sys.stderr)
        return _handled_ctrl_c()
    except KeyboardInterrupt:  # after the training: every record is written
        print("interrupted before the leaderboard was rebuilt; the same command rebuilds it", file=sys.stderr)
        return _handled_ctrl_c()


def _handled_ctrl_c() -> int:
    """Exit status 130 for a Ctrl-C the sweep handled. CPython marks a KeyboardInterrupt as unhandled when it
    escapes code that `exec` or `eval` ran from a string (dataclasses and namedtuples build methods that way,
    e.g. on a lazy import), even though a caller handles it, and a process run with `-m` then ends by SIGINT
    (status -2) whatever it returned; running a string through `exec` clears that mark."""
    exec("")  # noqa: S102 - a constant empty string
    return 130


def _sweep_runs(overrides: list[str], configs: list[dict], store: Store, given: str | None = None) -> int:
    """A sweep whose unit of work is a run: each in turn, or `workers` at a time, with one line per
    finished run and the time left at the pace so far."""
    todo = [c for c in configs if not store.exists(run_key(single_run(c)))]  # unreadable records set aside: redone
    workers = max(1, min(int(configs[0].get("workers", 1)), len(todo) or 1))
    threads = max(1, torch.get_num_threads() // workers)
    groups = len({group_key(single_run(c)) for c in configs})
    print(
        f"{_count(len(configs), 'run')} ({_count(groups, 'group')} x their learning-rate grids) in the sweep, "
        f"{len(configs) - len(todo)} already recorded in {store.records_dir}; {workers} worker(s) x {threads} thread(s)"
    )
    start, failed, finished = time.time(), 0, 0

    def done(cfg: dict, record: dict) -> None:
        nonlocal failed, finished
        finished += 1
        failed += record["status"] not in ("ok", "claimed")
        elapsed = time.time() - start
        left = elapsed / finished * (len(todo) - finished)
        print(
            f"[{finished}/{len(todo)}] {_coordinates(cfg)}: {_run_line(record)}; "
            f"{_duration(elapsed)} so far, ~{_duration(left)} left",
            flush=True,
        )

    recorded = lambda cfg: store.get(run_key(single_run(cfg)))  # noqa: E731
    _work(run_one, todo, workers, threads, "run", done, recorded)
    print(f"sweep done in {time.time() - start:.0f}s ({failed} failed)")
    paths = leaderboard.build(store.root)
    for p in paths:
        print(f"leaderboard: {p}")
    check(overrides, given, store, configs)
    return 0


def _sweep_groups(overrides: list[str], configs: list[dict], store: Store, given: str | None = None) -> int:
    """A sweep whose unit of work is a group (successive halving over its grid): each group in turn,
    or `workers` at a time, with one line per finished group and the time left at the pace so far."""
    groups = _groups(overrides)
    caps = continuation_caps(groups[0])
    by_run = continuations(store) if caps else {}  # read once: the chains stay as they were at the start

    def recorded(group: dict) -> list[dict] | None:
        """The group's records if its job is done: its search, then its continuation to each cap."""
        records, complete = group_records(grid_runs(group), store)  # a run has no continue_to
        if not complete:
            return None
        for cap in caps:
            runs = continuation_runs({**group, "continue_to": cap}, store, by_run)
            found = [rec for _, run in runs or [] if (rec := store.get(run_key(run))) is not None]
            if runs is None or len(found) != len(runs):
                return None
            records += found
        return records

    # a group killed between two of its record writes is not done: its search replays to write the rest
    todo = [g for g in groups if recorded(g) is None]
    then = f", each then trained on to {' and '.join(f'{c:,}' for c in caps)} steps where its search capped a run" if caps else ""
    head = (f"{len(groups)} groups ({len(configs)} runs of their grids, searched by successive halving{then}), "
            f"{len(groups) - len(todo)} already recorded in {store.records_dir}")  # fmt: skip
    workers = max(1, min(int(configs[0].get("workers", 1)), len(todo) or 1))
    threads = max(1, torch.get_num_threads() // workers)
    print(f"{head}; {workers} worker(s) x {threads} thread(s)")
    start, failed, done_groups = time.time(), 0, 0

    def done(group: dict, records: list[dict]) -> None:
        nonlocal failed, done_groups
        done_groups += 1
        failed += sum(r["status"] == "failed" for r in records)
        elapsed = time.time() - start
        left = elapsed / done_groups * (len(todo) - done_groups)
        claimed = [r for r in records if r["status"] == "claimed"]
        line = f"skipped: {claimed[0]['error']}" if claimed else _group_line(records)
        print(f"[{done_groups}/{len(todo)}] {line}; {elapsed / 60:.0f} min so far, ~{left / 60:.0f} min left", flush=True)

    _work(run_group, todo, workers, threads, "group", done, recorded)
    print(f"sweep done in {time.time() - start:.0f}s ({failed} failed)")
    for p in leaderboard.build(store.root):
        print(f"leaderboard: {p}")
    check(overrides, given, store, configs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
