"""Add to a store's records the ESS of their model as initialized (`metrics.ess_at_init`), where they
were trained before runs measured it. It needs no training: a run's initial model is a function of its
config and seed (every rate of a group starts from it), so it is rebuilt and measured exactly as
`benchmarks.run` measures it today, on the same validation examples. Each filled record says so
(`ess_at_init.backfilled`: the commit that measured it); nothing else in a record changes, and each is
rewritten atomically.

    python -m benchmarks.backfill results [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.config import build_task
from benchmarks.provenance import git_state
from benchmarks.run import _data, _ess_at_init
from benchmarks.store import Store, group_key


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="the store whose records to fill (e.g. results)")
    parser.add_argument("--dry-run", action="store_true", help="say how many records lack it, change nothing")
    parser.add_argument("--searched-only", action="store_true", help="only the groups of the converged protocol")
    args = parser.parse_args(argv)
    store = Store(args.store)
    if not store.records_dir.is_dir():
        print(f"backfill: no records in {store.records_dir}: give a store a sweep has written", file=sys.stderr)
        return 2
    groups = missing(store, args.searched_only)
    print(f"{sum(map(len, groups.values()))} records in {len(groups)} groups lack ESS at init")
    if not args.dry_run:
        print(f"filled {backfill(store, searched_only=args.searched_only)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
