"""Add to a store's records what runs recorded only since a later commit, without training again.

ESS at initialization (`metrics.ess_at_init`): a run's initial model is a function of its config and
seed (every rate of a group starts from it), so it is rebuilt and measured exactly as `benchmarks.run`
measures it today, on the same validation examples; each filled record says so
(`ess_at_init.backfilled`: the commit that measured it).

    python -m benchmarks.backfill results [--dry-run]

The seconds a continuation carried over (`metrics.continued.seconds_carried`, `--carried`): a run trained
past its cap resumes from the kept state of the run it trains further (`<store>/continuable/<key>.pt`)
and its `seconds` include that state's, which the earlier record spent; where no kept state was left it
trained from its first step and carried nothing. Which it was follows the rule `benchmarks.run` applies
(the nearest kept state up its chain, `_resumable_state`), read at the time the continuation started,
for code that kept states (`KEPT_SINCE`) and carried their seconds (`CARRIED_SINCE`): a
kept state on disk counts if written before then (its seconds read from it), one no longer on disk only
if its run's record and the continuation both started before `--kept-states-lost-before` (the time the
store lost its kept states, e.g. moved to another machine; its seconds then are that run's record's,
less the final ESS measured outside the trainer). Each filled record says so
(`continued.carried_backfilled`: the commit that filled it).

    python -m benchmarks.backfill results --carried --kept-states-lost-before 2026-12-05T21:00:00+00:00

Nothing else in a record changes, and each is rewritten atomically.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch

from benchmarks.config import build_task
from benchmarks.provenance import git_state
from benchmarks.run import _continuable_path, _data, _ess_at_init, _seconds_of
from benchmarks.store import Store, group_key

_REPO = Path(__file__).resolve().parent.parent


def _aware(text: str) -> datetime:
    """An ISO time with its zone (argparse's type: a bad one exits 2 naming the option)."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add one, e.g. {text}+00:00")
    return when


def missing(store: Store, searched_only: bool = False) -> dict[str, list[dict]]:
    """The successful records without ESS at init, by the initialization they share (group and seed);
    `searched_only`: only groups of the converged protocol (their rate searched by successive halving)."""
    out = defaultdict(list)
    for r in store.records():
        if r.get("status") == "ok" and "ess_at_init" not in r["metrics"]:
            if not searched_only or r["metrics"].get("search"):
                out[group_key(r["config"])].append(r)
    return out


def backfill(store: Store, device: torch.device | None = None, searched_only: bool = False) -> int:
    """Fill every record `missing` names (on the CPU unless `device`); returns how many were rewritten."""
    device = device or torch.device("cpu")
    commit = git_state()["commit"]
    done = 0
    for records in missing(store, searched_only).values():
        cfg = records[0]["config"]
        task = build_task(cfg["task"])
        data, _ = _data(cfg, task)
        ess = {**_ess_at_init(cfg, task, data, device), "backfilled": commit}
        for r in records:
            r["metrics"]["ess_at_init"] = ess
            store.write(r)
            done += 1
    return done


def _started(record: dict) -> datetime:
    return datetime.fromisoformat(record["started"])


def trainer_seconds(record: dict) -> float:
    """What a run's trainer had spent when its state was kept: its record's seconds, less the final ESS
    (measured after training, outside the trainer)."""
    return float(sum(v for k, v in record["metrics"]["seconds"].items() if k != "final_ess"))


KEPT_SINCE = "439745f"  # the commit from which a run the search capped keeps its state (continuable/<key>.pt)
CARRIED_SINCE = "8e9bb92"  # the commit from which a continuation resumed from it carries that state's seconds


@functools.cache
def _descends(commit: str, since: str) -> bool:
    """Whether code at `commit` includes commit `since` (git's history; False for a commit it lacks)."""
    done = subprocess.run(["git", "merge-base", "--is-ancestor", since, commit], capture_output=True, cwd=_REPO)
    return done.returncode == 0


def carried_seconds(record: dict, store: Store, lost_before: datetime | None) -> float:
    """The seconds continuation `record` carried over from the kept state it resumed from (the nearest up
    its chain of continued runs that existed when it started), or 0.0 where none did or its code carried
    none over (see the module)."""
    if not _descends(record["provenance"]["commit"], CARRIED_SINCE):
        return 0.0
    started, key = _started(record), record.get("continues")
    began_by = started + timedelta(seconds=1)  # `started` is kept to the second
    while key is not None and (run := store.get(key)) is not None:
        keeps = run["metrics"]["stopped"] == "budget" and _descends(run["provenance"]["commit"], KEPT_SINCE)
        if run.get("status") == "ok" and keeps:
            kept = _continuable_path(store, key)
            if kept.exists():
                if datetime.fromtimestamp(kept.stat().st_mtime, timezone.utc) < began_by:
                    return _seconds_of(torch.load(kept, weights_only=False))
            elif lost_before is not None and _started(run) < lost_before and started < lost_before:
                return trainer_seconds(run)
        key = run.get("continues")
    return 0.0


def uncarried(store: Store) -> list[dict]:
    """The successful continuations whose record does not say what they carried over."""
    return [
        r for r in store.records()
        if r.get("status") == "ok" and r.get("continues") and (r["metrics"].get("continued") or {}).get("seconds_carried") is None
    ]  # fmt: skip


def backfill_carried(store: Store, lost_before: datetime | None) -> int:
    """Fill `seconds_carried` of every continuation `uncarried` names; returns how many were rewritten."""
    commit = git_state()["commit"]
    done = 0
    for r in uncarried(store):
        carried = carried_seconds(r, store, lost_before)
        r["metrics"]["continued"].update(seconds_carried=round(carried, 2), carried_backfilled=commit)
        store.write(r)
        done += 1
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="the store whose records to fill (e.g. results)")
    parser.add_argument("--dry-run", action="store_true", help="say how many records lack it, change nothing")
    parser.add_argument("--searched-only", action="store_true", help="only the groups of the converged protocol")
    parser.add_argument("--carried", action="store_true", help="fill the seconds continuations carried over instead")
    parser.add_argument("--kept-states-lost-before", type=_aware, metavar="ISO-TIME",
                        help="with --carried: when the store lost its kept states (e.g. 2026-12-05T21:00:00+00:00)")  # fmt: skip
    args = parser.parse_args(argv)
    store = Store(args.store)
    if not store.records_dir.is_dir():
        print(f"backfill: no records in {store.records_dir}: give a store a sweep has written", file=sys.stderr)
        return 2
    if args.carried:
        todo = uncarried(store)
        print(f"{len(todo)} continuations lack the seconds they carried over")
        if not args.dry_run:
            print(f"filled {backfill_carried(store, args.kept_states_lost_before)} records")
        return 0
    groups = missing(store, args.searched_only)
    print(f"{sum(map(len, groups.values()))} records in {len(groups)} groups lack ESS at init")
    if not args.dry_run:
        print(f"filled {backfill(store, searched_only=args.searched_only)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
