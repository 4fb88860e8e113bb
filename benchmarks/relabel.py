"""Carry a preset's records over to a changed early-stop threshold where the threshold never acted.

    python -m benchmarks.relabel results published --solved-accuracy 0.995

`train.solved_accuracy` acts only at an evaluation whose validation accuracy reaches it (training
stops there). A run whose validation accuracy stayed below both the old and the new threshold at
every evaluation (a record's history holds every one) trained step for step as the new config
trains it: that record is rewritten under the new config's key and group, with `relabelled` saying
from which key and value and why. Every other record of the preset (a run the threshold did stop,
or a failed run) is left under its old key, outside the new plan, for the sweep to run again.
It reads the records' keys from the preset's plan as it was before the change
(`<store>/plans/<preset>.json`), after the preset itself was changed, and then rewrites that plan.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from benchmarks.store import Store, group_key, run_key


def threshold_never_acted(record: dict, old: float, new: float) -> bool:
    """Whether neither `old` nor `new` as `train.solved_accuracy` would have stopped this run."""
    history = record.get("metrics", {}).get("history") or []
    if record.get("status") != "ok" or not history:
        return False
    return max(h["val_accuracy"] for h in history) < min(old, new)


def relabelled(record: dict, new: float) -> dict:
    """`record` under the config with `train.solved_accuracy = new`: new key and group, provenance kept."""
    out = copy.deepcopy(record)
    old = out["config"]["train"]["solved_accuracy"]
    out["config"]["train"]["solved_accuracy"] = new
    out["key"], out["group"] = run_key(out["config"]), group_key(out["config"])
    out["relabelled"] = {
        "from_key": record["key"],
        "field": "train.solved_accuracy",
        "from": old,
        "to": new,
        "why": f"validation accuracy stayed below {min(old, new)} at every evaluation, so neither threshold stopped this run",
    }
    return out


def relabel(store: Store, keys: list[str], new: float) -> tuple[int, int]:
    """Rewrite the records among `keys` that the threshold change leaves unchanged; (moved, left)."""
    moved = left = 0
    for key in keys:
        if not store.exists(key):
            continue
        record = store.read(key)
        old = record["config"]["train"]["solved_accuracy"]
        if old == new:
            continue
        if not threshold_never_acted(record, old, new):
            left += 1
            continue
        store.write(relabelled(record, new))  # atomically, before the old file goes
        store.path(key).unlink()
        moved += 1
    return moved, left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("preset", help="the preset whose plan (<store>/plans/<preset>.json) names the records")
    parser.add_argument("--solved-accuracy", type=float, required=True, help="the new train.solved_accuracy")
    args = parser.parse_args(argv)
    plan = args.store / "plans" / f"{args.preset}.json"
    if not plan.exists():
        print(f"relabel: no plan {plan}: run the preset's sweep once, or name a preset with a plan", file=sys.stderr)
        return 2
    from benchmarks import bench  # the preset as it is now: the plan the relabelled records join

    overrides = [f"preset={args.preset}", f"store={args.store}"]
    configs = bench.plan(overrides)
    planned = {c["train"]["solved_accuracy"] for c in configs}  # validated by plan(): in (0, 1]
    if planned != {args.solved_accuracy}:  # so an out-of-range value is refused here too
        print(
            f"relabel: preset {args.preset} stops at train.solved_accuracy {sorted(planned)}, not {args.solved_accuracy}: "
            "change the preset first, so that the records join its plan",
            file=sys.stderr,
        )
        return 2
    moved, left = relabel(Store(args.store), json.loads(plan.read_text())["keys"], args.solved_accuracy)
    bench.write_plan(Store(args.store), overrides, configs)  # the page counts coverage against the new keys
    print(f"{moved} records relabelled to solved_accuracy {args.solved_accuracy}; {left} left to run again; {plan} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
