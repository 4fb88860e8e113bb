"""Tables and sentences -> the leaderboard's Markdown, CSV and page (Jinja template, autoescaped),
with numbers formatted as the column registry says."""

from __future__ import annotations

import base64
import functools
import html
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import figures
from benchmarks.report.columns import FORMATS, PROVENANCE, TABLE
from benchmarks.report.rows import HEADLINE_TOLERANCE, failed_runs, provenance_blobs
from benchmarks.report.stats import BELOW_BASELINE_Z, COLLAPSE, LEARNED_MARGIN, SATURATION
from benchmarks.throughput import scaling_table, speedup_table

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
)
PUBLISHED_STORE = "results"  # the published leaderboard's store: its ladder comes from the published presets


def ladder_note(root) -> str:
    """The ladder's caption, naming where its rows come from: the published presets for the published
    store, the store itself for any other (the default preset's, a user's)."""
    where = (
        "the published protocol (preset=published, published_ladder, published_ladder_l256 and published_ladder_top)."
        if Path(root).name == PUBLISHED_STORE and Path(root).parent.name != PUBLISHED_STORE
        else "the records of this store."
    )
    return LADDER_NOTE + where

CHANGE_NOTE = (
    "The MQAR rows train in Zoology's MQAR model (model.backbone=zoology); the leaderboard before them trained every "
    "mixer in MAD's mixer + MLP blocks, and those records are kept in mlp_backbone/. Why the two differ: the BaseConv "
    "layer ahead of the mixer hands each position its predecessor token, the induction-head pattern associative recall "
    "needs; a linear-attention-family layer has no other way to get it (the ablation below adds the BaseConv alone)."
)

SEEDS_NOTE = (
    "Groups trained at more than one seed (the `published_seeds` preset replicates the published MQAR sweep at "
    "seeds 1 and 2): each seed's best test accuracy and headline ESS, and the within-setting comparison at each "
    "seed. The tables above show one row per design, so that a replicate neither repeats a row nor weighs twice in a "
    "correlation: the run of its median seed by test accuracy where it has 3 or more seeds, else its lowest seed."
)


def _describe_group(runs: pd.DataFrame, group: str) -> str:
    """`mixer state task setting seed (rates run)`, for a line that names a group."""
    g = runs[runs["group"] == group]
    if g.empty:
        return group
    r = g.iloc[0]
    rates = ",".join(f"{x:.2g}" for x in sorted(g["lr"]))
    return " ".join(str(v) for v in (r.mixer, r.state, r.task, r.setting, f"seed {r.seed}", f"(lr {rates})") if v != "")


def _cell(column: str, value, formats: dict | None = None) -> str:
    formats = FORMATS if formats is None else formats
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if column in formats and isinstance(value, (int, float, np.integer, np.floating)):
        return formats[column].format(value)
    if isinstance(value, (float, np.floating)):  # other measurements: 3 significant digits, thousands separated
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(df: pd.DataFrame, formats: dict | None = None) -> str:
    """A GitHub-flavoured table, numbers formatted as on the page."""
    if df.empty:
        return "(none)"
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(str(c), v, formats).replace("|", "/") for c, v in row.items()) + " |")
    return "\n".join(lines)


def _sort_key(v) -> str:
    """A cell's value for the page's sorting: floats to 12 significant digits, so that a page rebuilt on
    another CPU, whose sums round differently in the last bit, is the same page."""
    return f"{v:.12g}" if isinstance(v, (float, np.floating)) else str(v)


def html_table(df: pd.DataFrame, table_id: str, row_class=None, details=None, formats: dict | None = None) -> str:
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
            shown = html.escape(_cell(str(c), v, formats))
            if c == "record" and details is not None:
                shown = f"<details><summary>{shown}</summary>{details(i)}</details>"
            cells.append(f'<td class="{cls.strip()}" data-value="{html.escape(_sort_key(v))}">{shown}</td>')
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
    "learning_curves": "Validation accuracy against the training sequences each mixer's best run saw (its best state "
    "size), per setting: where a curve still rises at its end, the run reached the step cap while improving (capped).",
    "ess_over_training": "Headline ESS / its bound for each group's best run at the 1st, 2nd, 4th, 8th, ... evaluation "
    "and the last: when state use grows, saturates or collapses as the mixer learns.",
}


CONVERGENCE_NOTE = (
    "The MQAR rows are trained until they stop improving (docs/protocol.md): fresh sequences every step, the learning "
    "rate searched by successive halving, a run ended when it solves the task or its validation loss stops improving, "
    "under a hard cap. Before, every run had 2,000 steps at three rates; those records are kept in budget_2000/ with "
    "their own page. Below: how the converged sweep stands against what it owes, and every model trained under both."
)
TIMING_NOTE = (
    "Does ESS predict what a model will learn, or describe what it learned? The verdict's test (Spearman of accuracy "
    "with ESS within each setting, weighted by rows) with ESS of each best row's model as initialized, at its first "
    "evaluation that measured ESS, and trained, and with TSS beside them, over the same rows; each with its clustered "
    "interval. ESS at initialization and early are measured on validation examples, the trained model's on test examples."
)
FAMILY_NOTE = (
    "As the ESS paper ran it: within a family (one mixer over four or more state sizes, on three or more MQAR settings, "
    "preset state_family), test accuracy against ESS/demand and against TSS/demand over its sizes and settings pooled, "
    "Spearman and Pearson, then every family pooled. The paper's claim is that ESS/demand tracks accuracy more closely. "
    "CPU hours: every run of these groups (every rate the search trained), from the records."
)
COST_NOTE = (
    "Per mixer, the groups trained under the converged protocol so far, their runs (every rate the search trained) and "
    "the CPU hours they took (each run's own training and measuring time, at one thread, a run trained past its cap "
    "counted with the capped runs it continues), from the records' metrics.seconds."
)
COST_BY_SETTING_NOTE = (
    "The same hours per task setting, every group there counted (all seeds, and the within-family test's extra "
    "state sizes)."
)


def _definitions() -> str:
    return (
        f"ESS: tolerance effective state-size per channel at the headline tolerance ({HEADLINE_TOLERANCE}: singular values "
        "above 1% of the channel operator's largest; see the tolerance section), mean over channels, layers, 4 test "
        "examples and the interior window of splits. TSS: the state size that bounds it (attention: L). Bound: the largest "
        "the headline ESS can be, the window's mean of min(TSS, i, L - i) (block i has rank at most min(i, L - i)). Memory "
        "demand: what the task asks to hold (MQAR: kv pairs; in-context recall: the keys, at most the pairs - 1; selective "
        f"copying: the tokens to copy; compression: L - 1 tokens). Saturated: ESS >= {SATURATION} bound. Collapsed: ESS below "
        f"the memory demand although the bound is at least the demand, and ESS < {COLLAPSE} bound. Not learned: test "
        f"accuracy within {LEARNED_MARGIN} of the no-recall baseline or below it; below baseline: under it by more than "
        f"{BELOW_BASELINE_Z} standard errors over the test sequences. Each row is its group's best learning "
        "rate, chosen on validation accuracy; test accuracy is reported. A design trained at 3 or more seeds shows its "
        "median seed's run, by test accuracy (the ladder adds the range); with fewer, its lowest seed: how much a row "
        "moves with the seed is in the Seeds section. The headline averages accuracy, accuracy above the baseline "
        "((acc - base) / (1 - base)), ESS and TSS alike over the settings every mixer has whole (each of its state "
        "sizes landed there)."
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
    return {
        c: "{:.3f}" if c.endswith((" acc", " base")) else "{:.1f}"
        for c in head.columns
        if c.endswith((" acc", " base", "ESS", "TSS"))
    }


def write(stage: Path, a: dict) -> list[Path]:
    """Write the leaderboard of the analyses `a` (`benchmarks.leaderboard.analyse`) into `stage`:
    Markdown, CSV and page, figures under `stage/figures`; links are relative to the store's root."""
    fig_dir = a["fig_dir"] = stage / "figures"
    a["head_fig"] = figures.headline_figure(a["df"], fig_dir)
    a["family_fig"] = figures.family_figure(a["family_rows"], fig_dir)
    a["df"].to_csv(stage / "leaderboard.csv", index=False)
    tasks_html, md_tasks = _tasks(**a)
    extra = {**figures.ess_vs_tss(a["df"], fig_dir), **figures.throughput_figure(a["tp"], fig_dir)}
    summary, incomplete, tol_note, throughput_html = _summary_and_throughput(extra, **a)
    (stage / "index.html").write_text(_page(tasks_html, summary, incomplete, tol_note, throughput_html, **a))
    markdown = _markdown(md_tasks, summary, **a) + _markdown_rest(extra, tol_note, **a)
    (stage / "leaderboard.md").write_text("\n".join(markdown) + "\n")
    return [stage / "leaderboard.md", stage / "leaderboard.csv", stage / "index.html"]


def formats_for(head: pd.DataFrame, ladder: pd.DataFrame) -> dict:
    """The registry's formats, with the headline's and the ladder's columns (named by family and setting)."""
    return {**FORMATS, **_headline_columns(head), **{c: "{:.3f}" for c in ladder.columns if c != "mixer"}}


def _with_seed_range(df: pd.DataFrame) -> pd.Series:
    """The accuracy column as shown: a median over 3 or more seeds with its range beside it."""
    if "accuracy_low" not in df or df["accuracy_low"].isna().all():
        return df["accuracy"]
    shown = df["accuracy"].astype(object)
    many = df["accuracy_low"].notna()
    shown[many] = [
        f"{a:.3f} ({lo:.3f}-{hi:.3f})" for a, lo, hi in df.loc[many, ["accuracy", "accuracy_low", "accuracy_high"]].to_numpy()
    ]
    return shown


def _tasks(
    *, df, corr, within, per_setting, use, training, curves, unlearned, fmt, fig_dir, learning=None, **_
) -> tuple[list[dict], list[str]]:
    """Each task's section: its table, figures and analyses, for the page and for the Markdown."""
    md = functools.partial(markdown_table, formats=fmt)
    ht = functools.partial(html_table, formats=fmt)
    table = df.assign(record=df["key"], accuracy=_with_seed_range(df))[list(TABLE)[:-1] + ["record"]].rename(columns=TABLE)
    use_cols = ["setting", "mixer", "state", "memory_demand", "tss", "bound", "ess", "ESS/bound", "ESS/demand", "accuracy"]
    use_shown = use[[*use_cols, "state use"]].rename(columns={"memory_demand": "memory demand", "tss": "TSS", "ess": "ESS"})

    tasks_html, md_tasks = [], []
    for task, g in df.groupby("task", sort=True):
        idx = g.index
        paths = figures.task_figures(task, df, training, curves, fig_dir, learning)

        def details(i, idx=idx):
            r = df.loc[idx[i]]
            items = "".join(f"<br>{html.escape(k)}: {html.escape(_cell(k, r[k], fmt))}" for k in PROVENANCE)
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
                "table": ht(table.loc[idx], f"runs-{task}", row_class, details),
                "figures": [_figure(n, p, CAPTIONS[n.removeprefix(task + "_")]) for n, p in paths.items()],
                "correlations": ht(t_corr, f"corr-{task}"),
                "within": ht(t_within, f"within-{task}"),
                "per_setting": ht(t_setting, f"setting-{task}"),
                "use": ht(t_use, f"use-{task}"),
                "unlearned": [line.split(": ", 1)[1] for line in unlearned if line.startswith(task + ":")],
            }
        )
        md_tasks += [
            f"## {task}",
            "",
            _task_note(task, g),
            "",
            md(table.loc[idx]),
            "",
            *[f"![{n}](figures/{p.name})" for n, p in paths.items()],
            "",
            "### Within each setting (one length and memory demand: the test of the claim)",
            "",
            md(t_setting),
            "",
            "### Pooled over settings (accuracy vs. ESS/demand and TSS/demand, as the ESS paper pools them)",
            "",
            md(t_corr),
            "",
            "### Within each mixer (accuracy above the no-recall baseline)",
            "",
            md(t_within),
            "",
            "### State use",
            "",
            md(t_use[t_use["state use"] != ""]),
            "",
        ]
    return tasks_html, md_tasks


def _summary_and_throughput(
    extra: dict, *, store, ok, failed, tp, runs, held_back, df, coverage, fmt, mixed=(), **_
) -> tuple[str, bool, str, str]:
    """The summary line, whether a sweep is incomplete, the tolerance note and the throughput section."""
    ht = functools.partial(html_table, formats=fmt)

    runs_recorded = len(ok)
    summary = (
        f"{len(df)} groups from {runs_recorded} successful runs ({len(failed)} failed), "
        f"{df['task'].nunique()} task{'' if df['task'].nunique() == 1 else 's'}. "
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
    if mixed:
        summary += (
            f" Trained under more than one protocol, so read twice by every table: {len(mixed)} model"
            f"{'s' if len(mixed) != 1 else ''} ({'; '.join(mixed[:5])}{'; ...' if len(mixed) > 5 else ''}); the older "
            "protocol's records belong in a store of their own."
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
            f"<div class='scroll'>{ht(tp, 'throughput')}</div><h3>Scaling with sequence length</h3>"
            f"<div class='scroll'>{ht(scaling_table(tp), 'scaling')}</div>"
        )  # fmt: skip
        speedups = speedup_table(tp)
        throughput_html += "<h3>Fast kernels vs. reference path</h3>" + (
            "<div class='scroll'>" + ht(speedups, "speedups") + "</div>"
            if not speedups.empty
            else "<p>none measured on one device</p>"
        )
    throughput_html += "".join(f"<figure><img alt='{n}' src='{_figure(n, p, '')['src']}'></figure>" for n, p in extra.items())

    return summary, incomplete, tol_note, throughput_html


def _convergence_and_state(
    ht, *, timing, timing_lines, family, family_lines, family_fig, protocol_cost, protocol_cost_by_setting,
    convergence_lines, protocol_change, protocol_change_lines, **_,
) -> dict:  # fmt: skip
    """The page's sections on convergence, ESS over time and state size within a family."""
    from markupsafe import Markup

    def table(df, table_id: str):
        return Markup(ht(df, table_id)) if not df.empty else ""

    return {
        "timing_note": TIMING_NOTE, "timing": table(timing, "timing"), "timing_lines": timing_lines,
        "family_note": FAMILY_NOTE, "family": table(family, "family"), "family_lines": family_lines,
        "family_figures": [_figure(n, p, "") for n, p in family_fig.items()],
        "convergence_note": CONVERGENCE_NOTE, "convergence_lines": convergence_lines,
        "protocol_change_lines": protocol_change_lines, "protocol_change": table(protocol_change, "protocol-change"),
        "cost_note": COST_NOTE, "protocol_cost": table(protocol_cost, "protocol-cost"),
        "cost_by_setting_note": COST_BY_SETTING_NOTE,
        "protocol_cost_by_setting": table(protocol_cost_by_setting, "protocol-cost-by-setting"),
    }  # fmt: skip


def _page(
    tasks_html: list[dict],
    summary: str,
    incomplete: bool,
    tol_note: str,
    throughput_html: str,
    *,
    root,
    records,
    failed,
    verdict,
    mad,
    lr,
    seeds,
    seed_verdicts,
    seed_lines,
    tol,
    coverage,
    shares,
    head,
    short,
    head_fig,
    ablation,
    findings,
    cost,
    ladder,
    ladder_lines,
    change,
    stamp,
    fmt,
    **rest,
) -> str:
    """index.html: the template filled, autoescaped; tables already rendered are marked safe."""
    ht = functools.partial(html_table, formats=fmt)
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(Path(__file__).parent.parent / "templates"), autoescape=select_autoescape(["j2"]))
    from markupsafe import Markup

    rendered = ("table", "correlations", "within", "per_setting", "use")  # already rendered tables
    page = env.get_template("leaderboard.html.j2").render(
        stamp=stamp,
        headline=Markup(ht(head, "headline")),
        headline_figures=[_figure(n, p, "") for n, p in head_fig.items()],
        short_verdict=short,
        ablation=Markup(ht(ablation, "ablation")) if not ablation.empty else "",
        findings=findings,
        change=change,
        ladder=Markup(ht(ladder, "ladder")) if not ladder.empty else "",
        ladder_lines=ladder_lines,
        ladder_note=ladder_note(root),
        change_note=CHANGE_NOTE,
        cost=Markup(ht(cost, "cost")) if not cost.empty else "",
        ablation_note=ABLATION_NOTE,
        summary=summary,
        coverage=coverage,
        incomplete=incomplete,
        verdict=verdict,
        definitions=_definitions(),
        tasks=[{k: (Markup(v) if k in rendered else v) for k, v in t.items()} for t in tasks_html],
        mad=Markup(ht(mad, "mad")) if not mad.empty else "No MAD task runs recorded yet.",
        lr=Markup(ht(lr, "lr")),
        seeds_note=SEEDS_NOTE,
        seed_lines=seed_lines,
        seeds=Markup(ht(seeds, "seeds")) if not seeds.empty else "",
        seed_verdicts=Markup(ht(seed_verdicts, "seed-verdicts")) if not seed_verdicts.empty else "",
        tolerance=Markup(ht(tol, "tolerance")),
        tolerance_note=tol_note,
        shares=Markup(ht(shares, "time")) if not shares.empty else "No run recorded its time split yet.",
        **_convergence_and_state(ht, **rest),
        throughput=Markup(throughput_html),
        failed=failed_runs(failed),
        provenance=provenance_blobs(records),
    )
    return page


def _markdown(
    md_tasks: list[str],
    summary: str,
    *,
    root,
    verdict,
    coverage,
    head,
    short,
    head_fig,
    ablation,
    findings,
    cost,
    unlearned,
    ladder,
    ladder_lines,
    change,
    stamp,
    fmt,
    **rest,
) -> list[str]:
    """leaderboard.md: the page's sections in the same order, tables as GitHub Markdown (the first
    screen, the ladder, the verdict, the ablation and the tasks; `_markdown_rest` the others)."""
    md = functools.partial(markdown_table, formats=fmt)

    cov = "; ".join(
        f"{c['sweep']}: {c['ok']} of {c['planned']} planned runs ({c['run_hours']:.1f} h of run time)" for c in coverage
    )
    text = [
        "# mixerbench leaderboard",
        "",
        stamp,
        "",
        md(head),
        "",
        *[f"![{n}](figures/{p.name})" for n, p in head_fig.items()],
        "",
        *short,
        "",
        summary + (f" Coverage: {cov}." if cov else ""),
        "",
        "## MQAR ladder: where each mixer's memory runs out",
        "",
        ladder_note(root),
        "",
        md(ladder),
        "",
        *[f"- {line}" for line in ladder_lines],
        "",
        *_markdown_convergence(md, **rest),
        "## Verdict: does ESS per memory demand track accuracy better than TSS does?",
        "",
        *[f"- {line}" for line in verdict],
        "",
        _definitions(),
        "",
        "Each row's full config, versions and curves are in `records/<record>.json`; the CSV has every column.",
        "",
        *_markdown_state(md, **rest),
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
        md(ablation),
        "",
        *[f"- {line}" for line in findings],
        "",
        md(cost),
        "",
        *md_tasks,
        *[f"- {line}" for line in unlearned],
        "",
    ]
    return text


def _markdown_convergence(md, *, convergence_lines, protocol_change, protocol_change_lines, **_) -> list[str]:
    return [
        "## Trained to convergence: what changed",
        "",
        CONVERGENCE_NOTE,
        "",
        *[f"- {line}" for line in convergence_lines + protocol_change_lines],
        "",
        md(protocol_change) if not protocol_change.empty else "",
        "",
    ]


def _markdown_state(md, *, timing, timing_lines, family, family_lines, family_fig, **_) -> list[str]:
    return [
        "### Predictive or descriptive?",
        "",
        TIMING_NOTE,
        "",
        md(timing) if not timing.empty else "No best rows carry ESS at initialization yet.",
        "",
        *[f"- {line}" for line in timing_lines],
        "",
        "## State size within a family: the ESS paper's test",
        "",
        FAMILY_NOTE,
        "",
        md(family) if not family.empty else "No mixer has four state sizes on three settings yet (preset state_family).",
        "",
        *[f"- {line}" for line in family_lines],
        *[f"![{n}](figures/{p.name})" for n, p in family_fig.items()],
        "",
    ]


def _markdown_rest(
    extra: dict, tol_note: str, *, failed, tp, mad, lr, seeds, seed_verdicts, seed_lines, tol, shares, protocol_cost,
    protocol_cost_by_setting, fmt, **_
) -> list[str]:
    """leaderboard.md from the MAD score on: the other analyses, throughput and failed runs."""
    md = functools.partial(markdown_table, formats=fmt)
    text = [
        "## MAD score",
        "",
        "MAD's score: per task the mean over its settings of the mixer's best test accuracy, then the mean over "
        "tasks. `MAD score` counts only the settings every mixer has whole (so a partial sweep ranks all mixers on "
        "the same tasks); `score, all its settings` counts each mixer's own; the task columns are the shared settings'.",
        "",
        md(mad),
        "",
        "## Learning-rate sensitivity",
        "",
        md(lr),
        "",
        "## Seeds",
        "",
        SEEDS_NOTE,
        "",
        *[f"- {line}" for line in seed_lines],
        "",
        md(seeds),
        "",
        md(seed_verdicts),
        "",
        "## Where a run's time goes",
        "",
        md(shares),
        "",
        "### What the converged protocol costs",
        "",
        COST_NOTE,
        "",
        md(protocol_cost),
        "",
        *([COST_BY_SETTING_NOTE, "", md(protocol_cost_by_setting), ""] if not protocol_cost_by_setting.empty else []),
        "## Tolerance sensitivity",
        "",
        tol_note,
        "",
        md(tol),
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
            md(tp),
            "",
            "### Scaling of time with sequence length",
            "",
            md(scaling_table(tp)),
            "",
        ]
    text += [f"![{n}](figures/{p.name})" for n, p in extra.items()]
    if failed:
        text += ["", "## Failed runs", "", "| record | mixer | error |", "|---|---|---|"]
        text += [f"| {r['key']} | {r['mixer']} | {r['error'].replace('|', '/')[:200]} |" for r in failed_runs(failed)]
    return text


# the review's fields that hold tables already rendered by `html_table` (escaped there)
REVIEW_TABLES = ("runs", "util", "accuracy", "throughput", "scaling")


def review_page(context: dict) -> str:
    """A design review's report.html: review.html.j2 filled, autoescaped, with the leaderboard's CSS
    and table renderer; `context["standing"]` holds {title, table} per setting."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=FileSystemLoader(Path(__file__).parent.parent / "templates"), autoescape=select_autoescape(["j2"]))
    context = {k: Markup(v) if k in REVIEW_TABLES else v for k, v in context.items()}
    context["standing"] = [{**t, "table": Markup(t["table"])} for t in context.get("standing", [])]
    return env.get_template("review.html.j2").render(**context)
