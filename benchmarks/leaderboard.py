"""Build the leaderboard from a store's records: `leaderboard.md`, `leaderboard.csv` (every column of
every best row), `index.html` (a self-contained page: a section per task with its table, figures and
analyses; sortable tables; each row's provenance one click away) and the figures under `figures/`.

    python -m benchmarks.leaderboard [store_dir]     # default: results

The numbers come from `benchmarks.analysis`, the figures from `benchmarks.figures`, the page's
layout from `templates/leaderboard.html.j2`. A rebuild writes everything into a temporary directory
beside the target and renames it into place, so a killed or failed rebuild leaves the last page whole.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import analysis, figures
from benchmarks.analysis import (  # noqa: F401  (select_best: imported from here by users and tests)
    COLLAPSE,
    HEADLINE_TOLERANCE,
    LEARNED_MARGIN,
    SATURATION,
    select_best,
)
from benchmarks.store import Store
from benchmarks.throughput import scaling_table, speedup_table, throughput_rows

# the narrow table of a task section: what a reader compares; provenance sits in the record cell
TABLE = {
    "mixer": "mixer",
    "backbone": "backbone",
    "state": "state",
    "tss": "TSS",
    "setting": "setting",
    "accuracy": "accuracy",
    "no_recall": "no-recall baseline",
    "learned": "learned",
    "val_accuracy": "val accuracy",
    "lr": "lr",
    "ess": "ESS",
    "ess_total": "ESS summed",
    "entropy_ess": "entropy ESS",
    "utilization": "ESS/TSS",
    "state_use": "state use",
    "key": "record",
}
FORMATS = {
    "accuracy": "{:.3f}",
    "no-recall baseline": "{:.3f}",
    "val accuracy": "{:.3f}",
    "lr": "{:.2g}",
    "ESS": "{:.2f}",
    "ESS summed": "{:,.0f}",
    "entropy ESS": "{:.2f}",
    "hours": "{:.1f}",
    "median run (s)": "{:.0f}",
    "ESS (machine precision)": "{:.2f}",
    "ESS/TSS": "{:.3f}",
    "ESS/bound": "{:.3f}",
    "bound": "{:.1f}",
    "ESS/demand": "{:.2f}",
    "forward tok/s": "{:,.0f}",
    "MAD score": "{:.3f}",
    "score, all its settings": "{:.3f}",
    "mean ESS/bound": "{:.3f}",
    "median spread": "{:.3f}",
    "mean run (s)": "{:.0f}",
    "steps share": "{:.1%}",
    "evaluation share": "{:.1%}",
    "ess over training share": "{:.1%}",
    "final ess share": "{:.1%}",
    "largest spread": "{:.3f}",
}
PROVENANCE = ["commit", "device", "kernels", "seed", "steps", "stopped", "lr_grid", "grid_spread", "parameters",
              "cache_bytes", "forward_tokens_per_s", "wall_time_s"]  # fmt: skip


def _nearest_throughput(tp: pd.DataFrame, mixer: str, device: str, length: int, kernels: list[str]) -> float:
    """Forward tok/s of the mixer on the run's device, with the kernel the run used where that was
    measured (a mixer can have fast and reference rows), at the nearest measured length."""
    g = tp[(tp["mixer"] == mixer) & (tp["device"] == device)]
    if g["kernel"].isin(kernels).any():
        g = g[g["kernel"].isin(kernels)]
    if g.empty:
        return float("nan")
    return float(g.iloc[(g["L"] - length).abs().argmin()]["forward tok/s"])


ABLATION_NOTE = (
    "Every mixer at MQAR L 64 with 4 and 8 kv pairs under the published MQAR protocol, in three models: zoology "
    "(Zoology's: a BaseConv layer then the mixer, no MLP; the published rows), conv_mlp (a BaseConv layer ahead of the "
    "mixer in each of MAD's mixer + MLP blocks; preset=ablation_backbone) and mad (MAD's mixer + MLP blocks; the records "
    "in mlp_backbone/). Each cell is the best test accuracy, or the headline ESS of that row, over the mixer's state "
    "sizes and learning rates (chosen on validation). Mixers with their own short convolution (Mamba, Mamba-2, Hyena) "
    "get no BaseConv: their conv_mlp model is their mad model (its cell is repeated, not trained again), and their "
    "zoology model is it without the MLP. The run "
    "cost is each backbone's "
    "wall time per MQAR run (records' wall_time_s), over all its settings and per setting: what each rung of the "
    "ladder costs."
)

LADDER_NOTE = (
    "Each MQAR setting recorded, from the easiest to the hardest (length, then kv pairs: the memory the task asks "
    "for), and each mixer's best test accuracy there over its state sizes and learning rates (chosen on validation); "
    "blank where it has not been run yet. The last row is each setting's no-recall baseline (1/kv). Zoology's model, "
    "the published protocol (preset=published, published_ladder and published_ladder_top)."
)

CHANGE_NOTE = (
    "The MQAR rows train in Zoology's MQAR model (model.backbone=zoology); the leaderboard before them trained every "
    "mixer in MAD's mixer + MLP blocks, and those records are kept in mlp_backbone/. Why the two differ: the BaseConv "
    "layer ahead of the mixer hands each position its predecessor token, the induction-head pattern associative recall "
    "needs; a linear-attention-family layer has no other way to get it (the ablation below adds the BaseConv alone)."
)

SEEDS_NOTE = (
    "Groups trained at more than one seed (the `published_seeds` preset replicates the published MQAR sweep at "
    "seeds 1 and 2): each seed's best test accuracy and headline ESS, and the within-setting comparison at each "
    "seed. The tables above use each design's lowest seed only, so a replicate neither repeats a row nor weighs "
    "twice in a correlation."
)


def rows(records: list[dict], tp: pd.DataFrame | None = None, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation), every column
    (`best`: `analysis.best_rows(analysis.run_rows(records))` where the caller has it already)."""
    tp = throughput_rows([]) if tp is None else tp
    if best is None:
        best = analysis.best_rows(analysis.run_rows(records), analysis.incomplete_groups(records))
    df = analysis.first_seed(best)
    df["forward_tokens_per_s"] = [
        _nearest_throughput(tp, r.mixer, r.device, r.seq_len, r.kernels.split(",")) for r in df.itertuples()
    ]
    df["state_use"] = analysis.state_use(df)["state use"].values if not df.empty else []
    return df


def _describe_group(runs: pd.DataFrame, group: str) -> str:
    """`mixer state task setting seed (rates run)`, for a line that names a group."""
    g = runs[runs["group"] == group]
    if g.empty:
        return group
    r = g.iloc[0]
    rates = ",".join(f"{x:.2g}" for x in sorted(g["lr"]))
    return " ".join(str(v) for v in (r.mixer, r.state, r.task, r.setting, f"seed {r.seed}", f"(lr {rates})") if v != "")


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if column in FORMATS and isinstance(value, (int, float, np.integer, np.floating)):
        return FORMATS[column].format(value)
    if isinstance(value, (float, np.floating)):  # other measurements: 3 significant digits, thousands separated
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured table, numbers formatted as on the page."""
    if df.empty:
        return "(none)"
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(str(c), v).replace("|", "/") for c, v in row.items()) + " |")
    return "\n".join(lines)


def html_table(df: pd.DataFrame, table_id: str, row_class=None, details=None) -> str:
    """A sortable table; `row_class(row)` styles a row, `details(row)` fills the last cell's
    collapsed provenance."""
    if df.empty:
        return "<p>(none)</p>"
    text_columns = {c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])}
    head = "".join(f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    for i, (_, row) in enumerate(df.iterrows()):
        cells = []
        for c, v in row.items():
            cls = "text" if c in text_columns else ""
            if c == "state use" and v:
                cls += f" use-{v}"
            if c == "learned":
                cls += " learned"
            shown = html.escape(_cell(str(c), v))
            if c == "record" and details is not None:
                shown = f"<details><summary>{shown}</summary>{details(i)}</details>"
            cells.append(f'<td class="{cls.strip()}" data-value="{html.escape(str(v))}">{shown}</td>')
        klass = row_class(i) if row_class else ""
        body.append(f'<tr class="{klass}">{"".join(cells)}</tr>')
    table_id = html.escape(table_id)
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figure(name: str, path: Path, caption: str) -> dict:
    return {"name": name, "src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), "caption": caption}


CAPTIONS = {
    "accuracy_vs_state": "Accuracy against the model's decoding state (bytes) per setting, as Zoology plots accuracy "
    "against state size: one line per mixer over its state sizes; dashed: the no-recall baseline; circled: not learned.",
    "accuracy_vs_ess": "Accuracy against ESS (top row) and TSS (bottom row) within each setting, every best row: at one "
    "demand the two differ from ESS/demand and TSS/demand only by a constant, so this is what the verdict tests.",
    "ess_curves": "ESS at each split of the sequence (headline tolerance), each mixer's largest state, one panel per setting.",
    "ess_over_training": "Headline ESS / its bound for each group's best run at the 1st, 2nd, 4th, 8th, ... evaluation "
    "and the last: when state use grows, saturates or collapses as the mixer learns.",
}


def _definitions() -> str:
    return (
        f"ESS: tolerance effective state-size per channel at the headline tolerance ({HEADLINE_TOLERANCE}: singular values "
        "above 1% of the channel operator's largest; see the tolerance section), mean over channels, layers, 4 test "
        "examples and the interior window of splits. TSS: the state size that bounds it (attention: L). Bound: the largest "
        "the headline ESS can be, the window's mean of min(TSS, i, L - i) (block i has rank at most min(i, L - i)). Memory "
        "demand: what the task asks to hold (MQAR: kv pairs; in-context recall: the keys, at most the pairs - 1; selective "
        f"copying: the tokens to copy; compression: L - 1 tokens). Saturated: ESS >= {SATURATION} bound. Collapsed: ESS below "
        f"the memory demand although the bound is at least the demand, and ESS < {COLLAPSE} bound. Not learned: test "
        f"accuracy within {LEARNED_MARGIN} of the no-recall baseline or below it. Each row is its group's best learning "
        "rate, chosen on validation accuracy; test accuracy is reported. One seed per row (each design's lowest): how much "
        "a row moves with the seed is in the Seeds section, where replicates exist."
    )


def _task_note(task: str, g: pd.DataFrame) -> str:
    settings = g["setting"].nunique()
    mixers = g["mixer"].nunique()
    nl = int((g["learned"] != "yes").sum())
    return f"{len(g)} best rows: {mixers} mixers x {settings} settings x their state sizes; {nl} not learned."


# stores beside the published one that hold the backbone ablation's other columns (benchmarks.relabel
# moved the MLP backbone's MQAR records to the first; preset=ablation_backbone writes the second)
ABLATION_STORES = ("mlp_backbone", "ablation_backbone")


def _headline_columns(head: pd.DataFrame) -> dict:
    return {c: "{:.3f}" if c.endswith(" acc") else "{:.1f}" for c in head.columns if c.endswith((" acc", "ESS"))}


def build(store_root: str | Path = "results") -> list[Path]:
    root = Path(store_root)
    store = Store(root)
    records = [r for r in store.records() if "metrics" in r or r.get("status") == "failed"]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    tp = throughput_rows(Store(root / "throughput").records())
    runs = analysis.run_rows(records)
    held_back = analysis.incomplete_groups(records)  # a sweep in progress: their grid is not complete yet
    every_seed = analysis.best_rows(runs, held_back)  # each group's best rate, every seed; the tables keep the first seed
    df = rows(records, tp, every_seed)
    root.mkdir(parents=True, exist_ok=True)
    # everything is written into a directory of its own beside the target, then renamed into place:
    # a killed or failed rebuild leaves the last page whole, and two rebuilds never share a file
    stage = Path(tempfile.mkdtemp(dir=root, prefix=".leaderboard-"))
    try:
        return _publish(_build_into(stage, root, store, records, ok, failed, tp, runs, held_back, every_seed, df), stage, root)
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


def _build_into(stage, root, store, records, ok, failed, tp, runs, held_back, every_seed, df) -> list[Path]:
    """Write the leaderboard of `root`'s records into `stage`: (Markdown, CSV, page), figures under
    `stage/figures`; the links in them are relative to `root`, where `_publish` moves them."""
    fig_dir = stage / "figures"

    corr = analysis.correlations(df)
    within = analysis.within_mixer_correlations(df)
    per_setting = analysis.within_setting_correlations(df)
    use = analysis.state_use(df)
    training = analysis.ess_over_training(ok, df)
    curves = figures.ess_curves(ok, df)
    verdict = analysis.verdict(corr, within, use, df)
    mad = analysis.mad_scores(df)
    lr = analysis.lr_sensitivity(runs)
    seeds, seed_verdicts = analysis.seed_spread(every_seed), analysis.seed_verdicts(every_seed)
    seed_lines = analysis.seed_summary(seeds, seed_verdicts)
    tol = analysis.tolerance_sensitivity(ok, df)
    coverage = analysis.coverage(root, records)
    shares = analysis.time_shares(records)
    head, short = analysis.headline(df), analysis.short_verdict(df)
    FORMATS.update(_headline_columns(head))
    head_fig = figures.headline_figure(df, fig_dir)
    beside = {name: Store(root / name).records() for name in ABLATION_STORES}  # each store read once
    side = [r for rs in beside.values() for r in rs if r.get("status") == "ok"]
    ablation = analysis.backbone_ablation(ok + side)
    findings = analysis.ablation_findings(ablation)
    cost = analysis.backbone_cost(ok + side)
    unlearned = analysis.never_learned(df, ablation)
    ladder, ladder_lines = analysis.ladder(df)
    FORMATS.update({c: "{:.3f}" for c in ladder.columns if c != "mixer"})
    before = [r for r in beside[ABLATION_STORES[0]] if "metrics" in r]
    change = analysis.backbone_change(df, rows(before)) if before else []
    newest = max((r.get("started", "") for r in ok), default="")
    commits = sorted({r["provenance"]["commit"][:10] for r in ok if r.get("started", "") >= newest[:10]})
    stamp = (
        f"From {len(ok)} runs in {root}/records, the newest started {newest} (commit {', '.join(commits)}); "
        "rebuilt by python -m benchmarks.leaderboard " + str(root) + "."
        if ok
        else "No runs recorded yet."
    )

    df.to_csv(stage / "leaderboard.csv", index=False)
    table = df.assign(record=df["key"])[list(TABLE)[:-1] + ["record"]].rename(columns=TABLE)
    use_cols = ["setting", "mixer", "state", "memory_demand", "tss", "bound", "ess", "ESS/bound", "ESS/demand", "accuracy"]
    use_shown = use[[*use_cols, "state use"]].rename(columns={"memory_demand": "memory demand", "tss": "TSS", "ess": "ESS"})

    tasks_html, md_tasks = [], []
    for task, g in df.groupby("task", sort=True):
        idx = g.index
        paths = figures.task_figures(task, df, training, curves, fig_dir)

        def details(i, idx=idx):
            r = df.loc[idx[i]]
            items = "".join(f"<br>{html.escape(k)}: {html.escape(_cell(k, r[k]))}" for k in PROVENANCE)
            key = html.escape(str(r["key"]))
            return f"<a href='records/{key}.json'>records/{key}.json</a>{items}"

        def row_class(i, idx=idx):
            return "not-learned" if df.loc[idx[i], "learned"] != "yes" else ""

        t_corr = corr[corr["task"] == task].drop(columns="task")
        t_within = within[within["task"] == task].drop(columns="task")
        t_setting = per_setting[per_setting["task"] == task].drop(columns="task")
        t_use = use_shown[use["task"] == task]
        tasks_html.append(
            {
                "name": task,
                "note": _task_note(task, g),
                "table": html_table(table.loc[idx], f"runs-{task}", row_class, details),
                "figures": [_figure(n, p, CAPTIONS[n.removeprefix(task + "_")]) for n, p in paths.items()],
                "correlations": html_table(t_corr, f"corr-{task}"),
                "within": html_table(t_within, f"within-{task}"),
                "per_setting": html_table(t_setting, f"setting-{task}"),
                "use": html_table(t_use, f"use-{task}"),
                "unlearned": [line.split(": ", 1)[1] for line in unlearned if line.startswith(task + ":")],
            }
        )
        md_tasks += [
            f"## {task}",
            "",
            _task_note(task, g),
            "",
            markdown_table(table.loc[idx]),
            "",
            *[f"![{n}](figures/{p.name})" for n, p in paths.items()],
            "",
            "### Within each setting (one length and memory demand: the test of the claim)",
            "",
            markdown_table(t_setting),
            "",
            "### Pooled over settings (accuracy vs. ESS/demand and TSS/demand, as the ESS paper pools them)",
            "",
            markdown_table(t_corr),
            "",
            "### Within each mixer (accuracy above the no-recall baseline)",
            "",
            markdown_table(t_within),
            "",
            "### State use",
            "",
            markdown_table(t_use[t_use["state use"] != ""]),
            "",
        ]
    extra = {**figures.ess_vs_tss(df, fig_dir), **figures.throughput_figure(tp, fig_dir)}

    runs_recorded = len(ok)
    summary = (
        f"{len(df)} groups from {runs_recorded} successful runs ({len(failed)} failed), {df['task'].nunique()} tasks. "
        "Each row is its group's best learning rate on validation; the group's whole grid and its spread are in the "
        "record cell and the CSV."
    )
    aside = store.corrupt_count()
    if aside:
        summary += (
            f" {aside} record file{'s' if aside > 1 else ''} could not be read and {'were' if aside > 1 else 'was'} set aside in "
            "records/corrupt/ (the next sweep trains those runs again)."
        )
    if held_back:
        summary += (
            " Held back until the sweep completes their learning-rate grid: "
            f"{len(held_back)} group{'s' if len(held_back) != 1 else ''} "
            f"({', '.join(sorted({_describe_group(runs, g) for g in held_back}))})."
        )
    incomplete = any(c["ok"] + c["failed"] < c["planned"] for c in coverage)
    tol_note = (
        "The headline ESS and the correlations at other tolerances: machine precision is matrix_rank's default "
        "(max(m, n) x eps x the block's largest singular value); block:r counts singular values above r x the block's largest, "
        "operator:r above r x the largest over every split of the channel's operator. Per task, ESS's advantage within settings "
        "is the verdict's test at that tolerance (Spearman of accuracy with ESS minus with TSS, within each setting, "
        "weighted by rows); the pooled coefficient is over all best rows, as the ESS paper pools them."
    )
    throughput_html = "<p>No throughput records: run <code>nox -s kernels</code>.</p>"
    if not tp.empty:
        throughput_html = (
            f"<div class='scroll'>{html_table(tp, 'throughput')}</div><h3>Scaling with sequence length</h3>"
            f"<div class='scroll'>{html_table(scaling_table(tp), 'scaling')}</div>"
        )  # fmt: skip
        speedups = speedup_table(tp)
        throughput_html += "<h3>Fast kernels vs. reference path</h3>" + (
            "<div class='scroll'>" + html_table(speedups, "speedups") + "</div>"
            if not speedups.empty
            else "<p>none measured on one device</p>"
        )
    throughput_html += "".join(f"<figure><img alt='{n}' src='{_figure(n, p, '')['src']}'></figure>" for n, p in extra.items())

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["j2"]))
    from markupsafe import Markup

    rendered = ("table", "correlations", "within", "per_setting", "use")  # already rendered tables
    page = env.get_template("leaderboard.html.j2").render(
        stamp=stamp,
        headline=Markup(html_table(head, "headline")),
        headline_figures=[_figure(n, p, "") for n, p in head_fig.items()],
        short_verdict=short,
        ablation=Markup(html_table(ablation, "ablation")) if not ablation.empty else "",
        findings=findings,
        change=change,
        ladder=Markup(html_table(ladder, "ladder")) if not ladder.empty else "",
        ladder_lines=ladder_lines,
        ladder_note=LADDER_NOTE,
        change_note=CHANGE_NOTE,
        cost=Markup(html_table(cost, "cost")) if not cost.empty else "",
        ablation_note=ABLATION_NOTE,
        summary=summary,
        coverage=coverage,
        incomplete=incomplete,
        verdict=verdict,
        definitions=_definitions(),
        tasks=[{k: (Markup(v) if k in rendered else v) for k, v in t.items()} for t in tasks_html],
        mad=Markup(html_table(mad, "mad")) if not mad.empty else "No MAD task runs recorded yet.",
        lr=Markup(html_table(lr, "lr")),
        seeds_note=SEEDS_NOTE,
        seed_lines=seed_lines,
        seeds=Markup(html_table(seeds, "seeds")) if not seeds.empty else "",
        seed_verdicts=Markup(html_table(seed_verdicts, "seed-verdicts")) if not seed_verdicts.empty else "",
        tolerance=Markup(html_table(tol, "tolerance")),
        tolerance_note=tol_note,
        shares=Markup(html_table(shares, "time")) if not shares.empty else "No run recorded its time split yet.",
        throughput=Markup(throughput_html),
        failed=[
            {"key": r["key"], "mixer": r["config"]["architecture"].get("name", "?"), "error": r.get("error", "")} for r in failed
        ],
        provenance=[
            {
                "key": r["key"],
                "mixer": r["config"]["architecture"].get("name", "?"),
                "blob": json.dumps({"config": r["config"], "provenance": r.get("provenance")}, indent=1),
            }
            for r in records
        ],
    )
    html_path = stage / "index.html"
    html_path.write_text(page)

    cov = "; ".join(
        f"{c['sweep']}: {c['ok']} of {c['planned']} planned runs ({c['run_hours']:.1f} h of run time)" for c in coverage
    )
    text = [
        "# mixerbench leaderboard",
        "",
        stamp,
        "",
        markdown_table(head),
        "",
        *[f"![{n}](figures/{p.name})" for n, p in head_fig.items()],
        "",
        *short,
        "",
        summary + (f" Coverage: {cov}." if cov else ""),
        "",
        "## MQAR ladder: where each mixer's memory runs out",
        "",
        LADDER_NOTE,
        "",
        markdown_table(ladder),
        "",
        *[f"- {line}" for line in ladder_lines],
        "",
        "## Verdict: does ESS per memory demand track accuracy better than TSS does?",
        "",
        *[f"- {line}" for line in verdict],
        "",
        _definitions(),
        "",
        "Each row's full config, versions and curves are in `records/<record>.json`; the CSV has every column.",
        "",
        "## Backbone ablation: what the short convolution is worth",
        "",
        "### What changed from the MLP-backbone leaderboard",
        "",
        CHANGE_NOTE,
        "",
        *[f"- {line}" for line in change],
        "",
        ABLATION_NOTE,
        "",
        markdown_table(ablation),
        "",
        *[f"- {line}" for line in findings],
        "",
        markdown_table(cost),
        "",
        *md_tasks,
        *[f"- {line}" for line in unlearned],
        "",
        "## MAD score",
        "",
        "MAD's score: per task the mean over its settings of the mixer's best test accuracy, then the mean over "
        "tasks. `MAD score` counts only the settings every mixer has (so a partial sweep ranks all mixers on "
        "the same tasks); `score, all its settings` counts each mixer's own; the task columns are the shared settings'.",
        "",
        markdown_table(mad),
        "",
        "## Learning-rate sensitivity",
        "",
        markdown_table(lr),
        "",
        "## Seeds",
        "",
        SEEDS_NOTE,
        "",
        *[f"- {line}" for line in seed_lines],
        "",
        markdown_table(seeds),
        "",
        markdown_table(seed_verdicts),
        "",
        "## Where a run's time goes",
        "",
        markdown_table(shares),
        "",
        "## Tolerance sensitivity",
        "",
        tol_note,
        "",
        markdown_table(tol),
        "",
    ]
    if not tp.empty:
        text += [
            "## Throughput",
            "",
            "Measured by `nox -s kernels` (method in `benchmarks/throughput.py`); every row names its device and kernel path. "
            "peak MB is forward + backward: the weights and input plus the peak the call allocates "
            "(CUDA allocator peak; on CPU, the peak increase of the resident set).",
            "",
            markdown_table(tp),
            "",
            "### Scaling of time with sequence length",
            "",
            markdown_table(scaling_table(tp)),
            "",
        ]
    text += [f"![{n}](figures/{p.name})" for n, p in extra.items()]
    if failed:
        text += ["", "## Failed runs", "", "| record | mixer | error |", "|---|---|---|"]
        for r in failed:
            text.append(
                f"| {r['key']} | {r['config']['architecture'].get('name', '?')} | {r.get('error', '').replace('|', '/')[:200]} |"
            )
    md_path = stage / "leaderboard.md"
    md_path.write_text("\n".join(text) + "\n")
    return [md_path, stage / "leaderboard.csv", html_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.leaderboard", description="Build the leaderboard (page, Markdown, CSV, figures) of a store."
    )
    parser.add_argument("store", nargs="?", default="results", help="the store's directory (default: results)")
    args = parser.parse_args(argv)
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
