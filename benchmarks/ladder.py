"""The MQAR ladder's upper rungs train only the mixers that earned them on the rung below.

The ladder (published 6 settings, then L 128 with 32 kv pairs for every mixer) climbs to L 256 with 64
kv pairs and L 512 with 128, where a group costs hours on this CPU. A mixer that recalls nothing at
L 128, kv 32 (at most the no-recall baseline + LEARNED_MARGIN) cannot recall at L 256, kv 64, with
twice the pairs in twice the length; one under 0.9 at L 256 does not solve L 512. So each upper rung
has a rule, fixed before the rung below was trained, and its preset lists the mixers the rule picks
from the rung below's best rows in the published store (a static list, so that re-running a preset
reproduces its runs, on any launcher). This module applies the rules:

    python -m benchmarks.ladder [store_dir]     # default: results

prints, per rung, its rule, whether the rung below has landed whole, the mixers the rule picks and
whether the preset lists them (exit 1 where it does not); tests/test_ladder.py checks the same.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from architectures import registry
from benchmarks.bench import expand
from benchmarks.config import grid_runs
from benchmarks.report import rows as rw
from benchmarks.report import stats as st
from benchmarks.store import Store, group_key


@dataclass(frozen=True)
class Rung:
    preset: str  # the preset that trains the rung
    below: str  # the preset that trains the rung below, every mixer there or the ones its own rule picked
    below_task: str  # the rung below's task config (benchmarks/conf/task)
    rule: str  # "learned" (above the no-recall baseline + LEARNED_MARGIN) or "solved" (at or above SOLVED)


RUNGS = (
    Rung("published_ladder_l256", "published_ladder", "mqar_cpu_l128_kv32", "learned"),
    Rung("published_ladder_top", "published_ladder_l256", "mqar_cpu_l256_kv64", "solved"),
)


def rule_text(rule: str) -> str:
    if rule == "learned":
        return f"best test accuracy is above the no-recall baseline + {st.LEARNED_MARGIN}"
    return f"best test accuracy is at or above {st.SOLVED}"


def passes(rows: pd.DataFrame, rule: str) -> pd.Series:
    """Whether each row (a mixer's best on the rung below) earns the rung above under `rule`."""
    if rule == "learned":
        return st.learned(rows)
    if rule == "solved":
        return rows["accuracy"] >= st.SOLVED
    raise ValueError(f"rule: {rule!r} is not 'learned' or 'solved'")


def planned_groups(preset: str, task: str) -> list[str]:
    """The group keys `preset` plans on `task` (every state size of every mixer it lists)."""
    return [group_key(runs[0]) for g in expand([f"preset={preset}", f"task={task}"]) if (runs := grid_runs(g))]


def preset_mixers(preset: str) -> list[str]:
    """The mixers `preset` trains, in the registry's order."""
    listed = {g["architecture"]["name"] for g in expand([f"preset={preset}"])}
    return [m for m in registry.reference_names() if m in listed]


def best_of(records: list[dict]) -> pd.DataFrame | None:
    """Each group's best row (`stats.best_rows`, grids a sweep has not finished held back); None without runs."""
    runs = rw.run_rows(records)
    return None if runs.empty else st.best_rows(runs, rw.incomplete_groups(records))


def choose(records: list[dict], groups: list[str], rule: str, best: pd.DataFrame | None = None) -> list[str] | None:
    """The mixers that earn the rung above: each mixer's best row over its state sizes (chosen on
    validation, `best_per_setting`) among `groups`, the rung below's groups, passing `rule`; in the
    registry's order. None while any of those groups has no best row yet (the rung below not landed).
    `best`: `best_of(records)`, where the caller has it already."""
    best = best_of(records) if best is None else best
    if best is None:
        return None
    below = best[best["group"].isin(groups)]
    if set(below["group"]) != set(groups):
        return None
    per_mixer = st.best_per_setting(below)
    earned = set(per_mixer.loc[passes(per_mixer, rule), "mixer"])
    return [m for m in registry.reference_names() if m in earned]


def report(root: Path) -> tuple[list[str], bool]:
    """One line per rung, and whether every landed rung's preset lists what its rule picks."""
    records = Store(root).records()
    best, landed = best_of(records), {r.get("group") for r in records if r.get("status") == "ok"}
    lines, agree = [], True
    for rung in RUNGS:
        groups = planned_groups(rung.below, rung.below_task)
        picked, listed = choose(records, groups, rung.rule, best), preset_mixers(rung.preset)
        head = f"{rung.preset}: the mixers whose {rule_text(rung.rule)} on {rung.below_task} ({rung.below})"
        if picked is None:
            done = len(set(groups) & landed)
            lines.append(f"{head}: not landed ({done} of {len(groups)} groups); the preset lists {', '.join(listed)}")
            continue
        same = picked == listed
        agree &= same
        verdict = "the preset lists them" if same else f"the preset lists {', '.join(listed) or 'none'}: set it to these"
        lines.append(f"{head}: {', '.join(picked) or 'none'}; {verdict}")
    return lines, agree


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(args) > 1:
        print(f"store_dir: one store at most, got {len(args)} arguments; usage: python -m benchmarks.ladder [store_dir]",
              file=sys.stderr)  # fmt: skip
        return 2
    root = Path(args[0] if args else "results")
    if not (root / "records").is_dir():
        print(f"store_dir: {root} has no records/ directory; give the store the ladder ran into, e.g. results", file=sys.stderr)
        return 2
    lines, agree = report(root)
    print("\n".join(lines))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
