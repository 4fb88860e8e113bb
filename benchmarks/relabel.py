"""Carry records over to a changed config where the change does not alter what they trained.

    python -m benchmarks.relabel results published --solved-accuracy 0.995
    python -m benchmarks.relabel results --backbone mad --move mqar=results/mlp_backbone

Backbone: records written before `model.backbone` existed name none; they trained in the model the
`mad` backbone builds unchanged (tests/test_backbone.py pins it). `--backbone mad` rewrites each
under its config with the backbone named (new key and group, `relabelled` saying from which key),
in place, or, for a task named in `--move`, into that store (the MQAR records of the MLP backbone
leave the published store, which now trains MQAR in Zoology's model, and the ablation reads them).

Threshold:

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

import copy
import json
import sys
from pathlib import Path

from benchmarks.overrides import Parser
from benchmarks.store import CorruptRecord, Store, group_key, load_record, run_key


class Unreadable(ValueError):
    """Records that do not validate: nothing was moved; the message names each."""


def threshold_never_acted(record: dict, old: float, new: float) -> bool:
    """Whether neither `old` nor `new` as `train.solved_accuracy` would have stopped this run."""
    history = record.get("metrics", {}).get("history") or []
    if record.get("status") != "ok" or not history:
        return False
    return max(h["val_accuracy"] for h in history) < min(old, new)


def _rekeyed(record: dict, section: str, name: str, new, why: str) -> dict:
    """`record` under its config with `<section>.<name> = new`: new key and group, provenance kept, and
    `relabelled` saying from which key and value, and why the run is the same."""
    out = copy.deepcopy(record)
    old = out["config"].get(section, {}).get(name)
    out["config"][section] = {**out["config"].get(section, {}), name: new}
    out["key"], out["group"] = run_key(out["config"]), group_key(out["config"])
    out["relabelled"] = {"from_key": record["key"], "field": f"{section}.{name}", "from": old, "to": new, "why": why}
    return out


def relabelled(record: dict, new: float) -> dict:
    """`record` under the config with `train.solved_accuracy = new`."""
    old = record["config"]["train"]["solved_accuracy"]
    why = f"validation accuracy stayed below {min(old, new)} at every evaluation, so neither threshold stopped this run"
    return _rekeyed(record, "train", "solved_accuracy", new, why)


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


def with_backbone(record: dict, backbone: str) -> dict:
    """`record` under its config with `model.backbone` named."""
    why = f"written before model.backbone existed; trained in the model the {backbone!r} backbone builds unchanged"
    return _rekeyed(record, "model", "backbone", backbone, why)


def carry_backbone(store: Store, backbone: str, move: dict[str, Store]) -> dict[str, int]:
    """Rewrite every record of `store` that names no backbone (see the module's docstring); counts
    of records carried per destination root."""
    loaded, bad = [], []
    for path in sorted(store.records_dir.glob("*.json")):  # every record validated before any moves
        try:
            loaded.append((path, load_record(path)))
        except CorruptRecord as e:
            bad.append(f"{path}: {e}")
    if bad:
        raise Unreadable("; ".join(bad))
    counts: dict[str, int] = {}
    for path, record in loaded:
        if "backbone" in record["config"].get("model", {}):
            continue
        target = move.get(record["config"]["task"]["name"], store)
        target.write(with_backbone(record, backbone))  # atomically, before the old file goes
        path.unlink()
        counts[str(target.root)] = counts.get(str(target.root), 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m benchmarks.relabel", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("preset", nargs="?", help="the preset whose plan (<store>/plans/<preset>.json) names the records")
    parser.add_argument("--solved-accuracy", type=float, help="the new train.solved_accuracy")
    parser.add_argument("--backbone", help="name this backbone in every record that names none")
    parser.add_argument(
        "--move", action="append", default=[], metavar="TASK=STORE", help="with --backbone: that task's records go to STORE"
    )
    args = parser.parse_args(argv)
    if args.backbone is not None:
        from architectures.backbone import NAMES

        if args.backbone not in NAMES:
            print(f"relabel: --backbone {args.backbone!r} unknown; one of {', '.join(NAMES)}", file=sys.stderr)
            return 2
        pairs = [m.partition("=") for m in args.move]
        if any(not sep or not task.strip() or not root.strip() for task, sep, root in pairs):
            # an empty STORE would be the working directory
            print("relabel: --move takes TASK=STORE, both given, e.g. --move mqar=results/mlp_backbone", file=sys.stderr)
            return 2
        from tasks import registry

        unknown = sorted({task for task, _, _ in pairs} - set(registry.names()))
        if unknown:
            print(f"relabel: --move: unknown task {', '.join(unknown)}; one of {', '.join(registry.names())}", file=sys.stderr)
            return 2
        move = {task: Store(root) for task, _, root in pairs}
        try:
            counts = carry_backbone(Store(args.store), args.backbone, move)
        except Unreadable as e:
            print(f"relabel: nothing moved: records that do not validate (fix or remove them first): {e}", file=sys.stderr)
            return 2
        for root, n in counts.items():
            print(f"{n} records named backbone {args.backbone!r} -> {root}/records")
        return 0
    if args.preset is None or args.solved_accuracy is None:
        print("relabel: give a preset and --solved-accuracy, or --backbone", file=sys.stderr)
        return 2
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
    try:
        keys = json.loads(plan.read_text())["keys"]
    except (ValueError, KeyError, TypeError) as e:
        why = f"{type(e).__name__}: {e}"
        print(f"relabel: {plan} is not a readable plan ({why}); run the preset's sweep to rewrite it", file=sys.stderr)
        return 2
    moved, left = relabel(Store(args.store), keys, args.solved_accuracy)
    bench.write_plan(Store(args.store), overrides, configs)  # the page counts coverage against the new keys
    print(f"{moved} records relabelled to solved_accuracy {args.solved_accuracy}; {left} left to run again; {plan} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
