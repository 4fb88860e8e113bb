"""Build the leaderboard from a store's records: `leaderboard.md`, `leaderboard.csv` (every column of
every best row), `index.html` (a self-contained page: a section per task with its table, figures and
analyses; sortable tables; each row's provenance one click away) and the figures under `figures/`.

    python -m benchmarks.leaderboard [store_dir]     # default: results

The stages are in `benchmarks.report` (rows, stats, tables, findings, render); `build` runs them in
order. A rebuild writes everything into a temporary directory beside the target and renames it into
place, so a killed or failed rebuild leaves the last page whole.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks import figures  # noqa: F401  (tests replace its functions here)
from benchmarks.overrides import Parser
from benchmarks.report import findings as fd
from benchmarks.report import rows as rw
from benchmarks.report import stats as st
from benchmarks.report import tables as tb
from benchmarks.report.columns import FORMATS, PROVENANCE, TABLE  # noqa: F401
from benchmarks.report.render import (  # noqa: F401
    ABLATION_NOTE,
    CAPTIONS,
    CHANGE_NOTE,
    LADDER_NOTE,
    SEEDS_NOTE,
    _cell,
    formats_for,
    html_table,
    markdown_table,
    write,
)  # fmt: skip
from benchmarks.report.rows import HEADLINE_TOLERANCE  # noqa: F401
from benchmarks.report.stats import COLLAPSE, LEARNED_MARGIN, SATURATION, select_best  # noqa: F401
from benchmarks.report.tables import _nearest_throughput  # noqa: F401
from benchmarks.report.tables import board as rows  # noqa: F401
from benchmarks.store import Store
from benchmarks.throughput import throughput_rows

# stores beside the published one that hold the backbone ablation's other columns (benchmarks.relabel
# moved the MLP backbone's MQAR records to the first; preset=ablation_backbone writes the second)
ABLATION_STORES = ("mlp_backbone", "ablation_backbone")
# the store beside the published one that holds the MQAR records of the step-capped protocol the
# converged one replaced (2,000 steps, three rates): the page says what changed between them
PREVIOUS_PROTOCOL = "budget_2000"


def _stamp(root: Path, ok: list[dict]) -> str:
    newest, commits = rw.newest(ok)
    if not ok:
        return "No runs recorded yet."
    return (
        f"From {len(ok)} runs in {root}/records, the newest started {newest} (commit {', '.join(commits)}); "
        "rebuilt by python -m benchmarks.leaderboard " + str(root) + "."
    )


def analyse(root: Path, store: Store) -> dict:
    """Every table and sentence of the page, by name: records -> rows -> statistics -> tables -> findings."""
    records, ok, failed = rw.by_status(store.records())
    a = {"root": root, "store": store, "records": records, "ok": ok, "failed": failed}
    planned = rw.plans(root)  # each sweep's planned run keys, by preset
    a["tp"] = throughput_rows(Store(root / "throughput").records())
    a["runs"] = runs = rw.run_rows(records)
    a["held_back"] = rw.incomplete_groups(records)  # a sweep in progress: their grid is not complete yet
    a["mixed"] = rw.mixed_protocols(runs)
    if a["mixed"]:
        n = len(a["mixed"])
        print(f"warning: {root}: {n} model{'s' if n != 1 else ''} trained under more than one protocol (first: "
              f"{a['mixed'][0]}); move the older protocol's records to a store of their own, as results/budget_2000",
              file=sys.stderr)  # fmt: skip
    a["every_seed"] = st.best_rows(runs, a["held_back"])  # each group's best rate, every seed
    a["df"] = df = tb.board(records, a["tp"], a["every_seed"])  # the tables keep the first seed
    a["corr"], a["within"] = tb.correlations(df), tb.within_mixer_correlations(df)
    a["per_setting"], a["use"] = tb.within_setting_correlations(df), tb.state_use(df)
    a["training"], a["curves"] = tb.ess_over_training(ok, df), figures.ess_curves(ok, df)
    a["learning"] = rw.learning_curves(ok, df["key"])
    a["verdict"] = fd.verdict(a["corr"], a["within"], a["use"], df)
    a["timing"] = tb.ess_timing(df)
    a["timing_lines"] = fd.ess_timing_lines(a["timing"])
    a["family"], a["family_rows"] = tb.state_family(df, runs), tb.family_rows(df)
    a["family_lines"] = fd.family_lines(a["family"])
    searched = rw.searched_groups(ok)
    searched_runs = runs[runs["group"].isin(searched)]
    a["protocol_cost"] = tb.protocol_cost(searched_runs)
    a["protocol_cost_by_setting"] = tb.protocol_cost(searched_runs, by="setting")
    a["convergence"] = tb.convergence(df, runs, searched)
    converged = df[df["group"].isin(searched)]
    a["convergence_lines"] = (
        fd.convergence_lines(a["convergence"]) + fd.cost_lines(a["protocol_cost"]) + fd.cap_lines(converged)
        + fd.continuation_lines(converged)
    )  # fmt: skip
    capped = rw.by_status(Store(root / PREVIOUS_PROTOCOL).records())[1]  # the step-capped protocol's records
    a["protocol_change"] = tb.protocol_change(converged, tb.board(capped)) if capped else pd.DataFrame()
    a["protocol_change_lines"] = fd.protocol_change_lines(a["protocol_change"])
    a["mad"], a["lr"] = tb.mad_scores(df), tb.lr_sensitivity(runs)
    a["seeds"], a["seed_verdicts"] = tb.seed_spread(a["every_seed"]), tb.seed_verdicts(a["every_seed"])
    a["seed_lines"] = fd.seed_summary(a["seeds"], a["seed_verdicts"])
    a["tol"], a["shares"] = tb.tolerance_sensitivity(ok, df), tb.time_shares(records)
    a["coverage"] = rw.coverage(planned, records)
    ranked = df[~df["group"].isin(rw.family_only_groups(planned, records))]  # each mixer over its published sizes
    a["head"], a["short"] = tb.headline(ranked), fd.short_verdict(df)
    beside = {name: Store(root / name).records() for name in ABLATION_STORES}  # each store read once
    side = [r for rs in beside.values() for r in rw.by_status(rs)[1]]
    long = tb.backbone_ablation(ok + side)
    a["ablation"], a["findings"], a["cost"] = tb.ablation_table(long), fd.ablation_findings(long), tb.backbone_cost(ok + side)
    a["unlearned"] = fd.never_learned(df, long) + fd.below_baseline_lines(df)
    a["ladder"] = tb.ladder(ranked)
    a["ladder_lines"] = fd.ladder_lines(a["ladder"])
    before = rw.measured(beside[ABLATION_STORES[0]])
    a["change"] = fd.backbone_change(df, tb.board(before)) if before else []
    a["stamp"] = _stamp(root, ok)
    a["fmt"] = formats_for(a["head"], a["ladder"])
    return a


def build(store_root: str | Path = "results") -> list[Path]:
    root = Path(store_root)
    store = Store(root)
    root.mkdir(parents=True, exist_ok=True)
    # everything is written into a directory of its own beside the target, then renamed into place:
    # a killed or failed rebuild leaves the last page whole, and two rebuilds never share a file
    stage = Path(tempfile.mkdtemp(dir=root, prefix=".leaderboard-"))
    try:
        return _publish(write(stage, analyse(root, store)), stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(written: list[Path], stage: Path, root: Path) -> list[Path]:
    """Rename every file written under `stage` to the same place under `root`, figures first and the page
    last; then remove the figures the new build did not draw (tasks no longer in the store)."""
    fig_dir = root / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    new = sorted((stage / "figures").glob("*.png")) if (stage / "figures").is_dir() else []
    for path in new:
        os.replace(path, fig_dir / path.name)
    for old in fig_dir.glob("*.png"):
        if old.name not in {p.name for p in new}:
            old.unlink(missing_ok=True)
    out = []
    for path in written:
        os.replace(path, root / path.name)
        out.append(root / path.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m benchmarks.leaderboard", description="Build the leaderboard (page, Markdown, CSV, figures) of a store."
    )
    parser.add_argument("store", nargs="?", default="results", help="the store's directory (default: results; or store=DIR)")
    args = parser.parse_args(argv)
    key, sep, value = args.store.partition("=")
    if sep and key == "store":  # the key=value form of the other commands
        args.store = value
    elif sep and not Path(args.store).exists():
        parser.error(f"unknown argument {args.store!r}: give the store's directory, e.g. results")
    root = Path(args.store)
    store = Store(root)
    try:
        if not store.records_dir.is_dir() or not any(store.records_dir.glob("*.json")):
            # a mistyped or empty store would publish an empty leaderboard over nothing
            print(f"leaderboard: no records in {store.records_dir}: give a store a sweep has written", file=sys.stderr)
            return 2
        paths = build(root)
    except OSError as e:  # a read-only store, a full disk
        where = f" ({e.filename})" if e.filename else ""
        print(f"leaderboard: cannot build in {root}: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
