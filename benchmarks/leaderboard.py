"""Build the leaderboard from a store's records: `leaderboard.md`, `leaderboard.csv`, `index.html`
(a self-contained page: sortable tables, embedded figures, each row's provenance) and the seaborn
figures under `figures/`.

    python -m benchmarks.leaderboard [store_dir]     # default: results
"""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.config import mixer_spec
from benchmarks.store import Store
from benchmarks.throughput import scaling_table, speedup_table, throughput_rows

COLUMNS = {
    "mixer": "mixer",
    "task": "task",
    "level": "level",
    "seq_len": "L",
    "memory_demand": "memory demand",
    "accuracy": "accuracy",
    "no_recall": "no-recall baseline",
    "learned": "learned",
    "val_accuracy": "val accuracy",
    "lr": "lr",
    "lr_grid": "lr grid",
    "grid_spread": "accuracy over grid",
    "ess_mean": "ESS (mean)",
    "entropy_ess_mean": "entropy ESS",
    "tss": "TSS",
    "utilization": "ESS/TSS",
    "cache_bytes": "cache bytes",
    "forward_tokens_per_s": "forward tok/s",
    "parameters": "params",
    "steps": "steps",
    "seed": "seed",
    "commit": "commit",
    "device": "device",
    "kernels": "kernel",
    "wall_time_s": "time (s)",
    "key": "record",
}
FORMATS = {
    "accuracy": "{:.3f}",
    "no-recall baseline": "{:.3f}",
    "val accuracy": "{:.3f}",
    "lr": "{:.2g}",
    "ESS (mean)": "{:.2f}",
    "entropy ESS": "{:.2f}",
    "ESS/TSS": "{:.3f}",
    "forward tok/s": "{:,.0f}",
}


def _nearest_throughput(tp: pd.DataFrame, mixer: str, device: str, length: int, kernels: list[str]) -> float:
    """Forward tok/s of the mixer on the run's device, with the kernel the run used where that was
    measured (a mixer can have fast and reference rows), at the nearest measured length."""
    g = tp[(tp["mixer"] == mixer) & (tp["device"] == device)]
    if g["kernel"].isin(kernels).any():
        g = g[g["kernel"].isin(kernels)]
    if g.empty:
        return float("nan")
    return float(g.iloc[(g["L"] - length).abs().argmin()]["forward tok/s"])


# a row within this much of its no-recall baseline (or below it) has not learned recall
LEARNED_MARGIN = 0.01


def _run_row(r: dict, tp: pd.DataFrame) -> dict:
    m, prov, cfg = r["metrics"], r["provenance"], r["config"]
    mixer = mixer_spec(cfg["architecture"])[0]
    return {
        "group": r.get("group", r["key"]),
        "mixer": mixer,
        "task": m["task"]["name"],
        "level": m["task"].get("level", cfg["task"].get("level")),
        "seq_len": m["task"]["seq_len"],
        "memory_demand": m["task"]["memory_demand"],
        "accuracy": m["accuracy"],
        "no_recall": m["task"].get("no_recall_accuracy", float("nan")),
        "val_accuracy": m.get("val_accuracy", float("nan")),
        "val_loss": m.get("val_loss", float("nan")),
        "lr": cfg["train"]["lr"],
        "ess_mean": m["ess"]["ess_mean"],
        "entropy_ess_mean": m["ess"]["entropy_ess_mean"],
        "tss": m["tss"],
        "utilization": m["utilization"],
        "cache_bytes": m["cache_bytes"],
        "forward_tokens_per_s": _nearest_throughput(tp, mixer, prov["device"], m["task"]["seq_len"], m["kernels"]),
        "parameters": m["parameters"],
        "steps": m["steps"],
        "seed": r["seed"],
        "commit": prov["commit"][:10] + ("+dirty" if prov.get("dirty") else ""),
        "device": prov["device"],
        "kernels": ",".join(m["kernels"]),
        "wall_time_s": r["wall_time_s"],
        "key": r["key"],
    }


def run_rows(records: list[dict], tp: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per successful run (every learning rate of every group)."""
    tp = throughput_rows([]) if tp is None else tp
    out = [_run_row(r, tp) for r in records if r.get("status") == "ok"]
    return pd.DataFrame(out, columns=["group", *COLUMNS, "val_loss"])


def select_best(runs: pd.DataFrame) -> pd.DataFrame:
    """Each group's best run, chosen on validation (accuracy, then loss), never on test; with the
    grid it was chosen from and the spread of test accuracy over that grid."""
    if runs.empty:
        return runs
    ranked = runs.sort_values(["group", "val_accuracy", "val_loss", "lr"], ascending=[True, False, True, True])
    best = ranked.groupby("group", sort=False).head(1).set_index("group")
    by_group = runs.groupby("group")
    best["lr_grid"] = by_group["lr"].agg(lambda v: ",".join(f"{x:.2g}" for x in sorted(v)))
    best["grid_spread"] = by_group["accuracy"].agg(lambda v: f"{v.min():.2f}-{v.max():.2f}" if len(v) > 1 else "")
    return best.reset_index()


def rows(records: list[dict], tp: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation)."""
    df = select_best(run_rows(records, tp))
    df["learned"] = np.where(df["accuracy"] > df["no_recall"] + LEARNED_MARGIN, "yes", "not learned")
    df = df[list(COLUMNS)] if not df.empty else pd.DataFrame(columns=list(COLUMNS))
    return df.sort_values(
        ["task", "seq_len", "memory_demand", "accuracy"], ascending=[True, True, True, False], ignore_index=True
    )


def _cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if column in FORMATS and isinstance(value, (int, float)):
        return FORMATS[column].format(value)
    if isinstance(value, float):  # other measurements: 3 significant digits, thousands separated
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _plain_markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}")
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _markdown(df: pd.DataFrame) -> str:
    shown = df.rename(columns=COLUMNS)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    for _, row in shown.iterrows():
        lines.append("| " + " | ".join(_cell(c, v) for c, v in row.items()) + " |")
    return "\n".join(lines)


def correlations(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against ESS / memory demand and TSS / memory demand (the ESS paper's claim), per task
    (never pooled across tasks), over the rows that learned and, apart, over all rows: Pearson and
    Spearman coefficients with n. A coefficient needs 3 rows and some spread on both axes."""
    from scipy import stats

    out = []
    for task, g in df.groupby("task"):
        for subset, part in (("learned", g[g["learned"] == "yes"]), ("all", g)):
            row = {"task": task, "rows": subset, "n": len(part)}
            demand = part["memory_demand"].clip(lower=1)
            for name, col in (("ESS", "ess_mean"), ("TSS", "tss")):
                x, y = part[col] / demand, part["accuracy"]
                ok = len(part) >= 3 and x.nunique() > 1 and y.nunique() > 1
                row[f"Pearson {name}/demand"] = float(stats.pearsonr(x, y)[0]) if ok else float("nan")
                row[f"Spearman {name}/demand"] = float(stats.spearmanr(x, y)[0]) if ok else float("nan")
            out.append(row)
    cols = ["task", "rows", "n", "Pearson ESS/demand", "Spearman ESS/demand", "Pearson TSS/demand", "Spearman TSS/demand"]
    return pd.DataFrame(out, columns=cols)


def figures(records: list[dict], df: pd.DataFrame, out_dir: Path, tp: pd.DataFrame | None = None) -> dict[str, Path]:
    """The seaborn figures; returns name -> PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

    from architectures import registry

    sns.set_theme(style="whitegrid", context="notebook")
    extra = set(df["mixer"]) | (set(tp["mixer"]) if tp is not None else set())
    known = registry.names() + sorted(extra - set(registry.names()))
    palette = dict(zip(known, sns.color_palette("tab20", len(known)), strict=True))  # one colour per mixer everywhere
    out_dir.mkdir(parents=True, exist_ok=True)

    def log_axis(axis):
        axis.set_major_formatter(LogFormatterSciNotation())
        axis.set_minor_formatter(NullFormatter())

    paths: dict[str, Path] = {}

    def save(fig, name: str):
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths[name] = path

    if tp is not None and not tp.empty:
        grid = sns.relplot(
            data=tp,
            x="L",
            y="forward tok/s",
            hue="mixer",
            palette=palette,
            style="kernel",
            col="device",
            kind="line",
            marker="o",
            height=3.6,
            facet_kws={"sharey": False},
        )
        for ax in grid.axes.flat:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            log_axis(ax.yaxis)
        grid.figure.suptitle("Forward throughput vs. sequence length (device in each panel)", y=1.03)
        save(grid.figure, "throughput_vs_length")
    if df.empty:
        return paths

    grid = sns.relplot(
        data=df,
        x="memory_demand",
        y="accuracy",
        hue="mixer",
        palette=palette,
        col="task",
        kind="line",
        marker="o",
        col_wrap=min(3, df["task"].nunique()),
        height=3.2,
        facet_kws={"sharex": False},
    )
    for task, ax in grid.axes_dict.items():  # the no-recall baseline, and the rows at or below it
        rows_of = df[df["task"] == task]
        base = rows_of.groupby("memory_demand")["no_recall"].mean()
        ax.plot(base.index, base.values, "k--", lw=1, label="no-recall baseline")
        below = rows_of[rows_of["learned"] != "yes"]
        ax.scatter(below["memory_demand"], below["accuracy"], marker="x", color="black", s=30, zorder=5, label="not learned")
    grid.set_axis_labels("memory demand (e.g. kv pairs)", "test accuracy")
    grid.figure.suptitle("Accuracy vs. difficulty (dashed: no-recall baseline; x: not learned)", y=1.03)
    save(grid.figure, "accuracy_vs_difficulty")

    curves = []
    shown = set(df["key"]) if "key" in df else set()
    learned = df.groupby("mixer")["learned"].agg(lambda v: (v == "yes").any()).to_dict()
    for r in records:
        if r.get("status") != "ok" or r["key"] not in shown:  # each group's best run, as in the table
            continue
        e = r["metrics"]["ess"]
        for i, v in zip(e["positions"], e["ess_curve"], strict=True):
            curves.append(
                {
                    "mixer": mixer_spec(r["config"]["architecture"])[0]
                    + ("" if learned.get(mixer_spec(r["config"]["architecture"])[0]) else " (not learned)"),
                    "task": r["metrics"]["task"]["name"],
                    "L": r["metrics"]["task"]["seq_len"],
                    "split i": i,
                    "ESS": v,
                }
            )
    if curves:
        cdf = pd.DataFrame(curves)
        task, length = cdf.groupby(["task", "L"]).size().idxmax()  # the most common setting, for a like-for-like plot
        sub = cdf[(cdf["task"] == task) & (cdf["L"] == length)]
        fig, ax = plt.subplots(figsize=(7, 4))
        colours = {m: palette[m.removesuffix(" (not learned)")] for m in sub["mixer"].unique()}
        sns.lineplot(data=sub, x="split i", y="ESS", hue="mixer", palette=colours, ax=ax, errorbar=None)
        lo, hi = next(r["metrics"]["ess"]["window"] for r in records if r.get("status") == "ok")
        ax.axvspan(lo, hi, color="grey", alpha=0.12, label="headline window")
        ax.plot(
            sub["split i"].unique(),
            np.minimum(sub["split i"].unique(), length - sub["split i"].unique()),
            "k:",
            lw=1,
            label="min(i, L - i)",
        )
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(f"ESS over position ({task}, L={length}); boundary effect beyond the window")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "ess_curves")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    sns.scatterplot(
        data=df, x="tss", y="ess_mean", hue="mixer", palette=palette, style="learned", markers={"yes": "o", "not learned": "X"},
        s=80, ax=ax,
    )  # fmt: skip
    top = max(df["tss"].max(), df["ess_mean"].max(), 1)
    ax.plot([0.5, top], [0.5, top], "k:", lw=1, label="ESS = TSS")
    ax.set_xscale("log")
    ax.set_yscale("log")
    log_axis(ax.xaxis)
    log_axis(ax.yaxis)
    ax.set_xlabel("TSS per channel")
    ax.set_ylabel("mean ESS per channel")
    ax.set_title("ESS vs. TSS")
    ax.legend(fontsize=7)
    save(fig, "ess_vs_tss")

    corr = correlations(df).set_index(["task", "rows"])
    scatter = df.assign(
        ESS_per_demand=df["ess_mean"] / df["memory_demand"].clip(lower=1),
        TSS_per_demand=df["tss"] / df["memory_demand"].clip(lower=1),
    ).melt(
        id_vars=["mixer", "task", "accuracy", "learned"],
        value_vars=["ESS_per_demand", "TSS_per_demand"],
        var_name="measure",
        value_name="per demand",
    )
    scatter["measure"] = scatter["measure"].str.replace("_per_demand", " / memory demand")
    grid = sns.relplot(
        data=scatter,
        x="per demand",
        y="accuracy",
        hue="mixer",
        palette=palette,
        style="learned",
        markers={"yes": "o", "not learned": "X"},
        row="task",
        col="measure",
        height=3.4,
        aspect=1.2,
        s=60,
        facet_kws={"sharex": False},
    )
    for (task, measure), ax in grid.axes_dict.items():
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        name = measure.split()[0]
        r = corr["Spearman " + name + "/demand"].get((task, "learned"), float("nan"))
        n = corr["n"].get((task, "learned"), 0)
        ax.set_title(f"{task}: {measure}\nSpearman (learned rows) = {r:.2f}, n = {n}", fontsize=9)
    grid.set_axis_labels("", "test accuracy")
    save(grid.figure, "accuracy_vs_ess")
    return paths


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mixerbench leaderboard</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; cursor: pointer; user-select: none; }}
th.asc::after {{ content: " \\25B2"; }} th.desc::after {{ content: " \\25BC"; }}
td:first-child, td:nth-child(2) {{ text-align: left; }}
img {{ max-width: 100%; margin: 1em 0; }} details {{ font-size: 12px; }} code {{ font-size: 12px; }}
</style></head><body>
<h1>mixerbench leaderboard</h1>
<p>{summary}</p>
<h2>Leaderboard</h2>
{table}
<h2>Accuracy vs. ESS and TSS per memory demand, per task</h2>
{correlations}
<h2>Throughput</h2>
{throughput}
<h2>Figures</h2>
{figures}
<h2>Failed runs</h2>
{failed}
<h2>Provenance</h2>
{provenance}
<script>
document.querySelectorAll("table.sortable").forEach(function (table) {{
  table.querySelectorAll("th").forEach(function (th, col) {{
    th.addEventListener("click", function () {{
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) {{ h.classList.remove("asc", "desc"); }});
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0];
      var rows = Array.from(body.rows);
      rows.sort(function (a, b) {{
        var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? cmp : -cmp;
      }});
      rows.forEach(function (r) {{ body.appendChild(r); }});
    }});
  }});
}});
</script>
</body></html>
"""


def _html_table(df: pd.DataFrame, table_id: str, rename: bool = True) -> str:
    shown = df.rename(columns=COLUMNS) if rename else df
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = []
    for _, row in shown.iterrows():
        cells = "".join(f'<td data-value="{html.escape(str(v))}">{html.escape(_cell(c, v))}</td>' for c, v in row.items())
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _page(records, df, failed, fig_paths, summary, tp=None, scaling=None, speedups=None, corr=None) -> str:
    figs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>"
        for name, p in fig_paths.items()
    )
    fails = (
        "<p>none</p>"
        if not failed
        else "<ul>"
        + "".join(
            f"<li><code>{html.escape(r['key'])}</code> {html.escape(r['config']['architecture'].get('name', '?'))}: "
            f"{html.escape(r.get('error', ''))}</li>"
            for r in failed
        )
        + "</ul>"
    )

    def provenance_of(r: dict) -> str:
        blob = json.dumps({"config": r["config"], "provenance": r.get("provenance")}, indent=1)
        name = r["config"]["architecture"].get("name", "?")
        summary_line = f"<summary><code>{html.escape(r['key'])}</code> {html.escape(name)}</summary>"
        return f"<details>{summary_line}<pre>{html.escape(blob)}</pre></details>"

    prov = "".join(provenance_of(r) for r in records)
    tables = "<p>No throughput records: run <code>nox -s kernels</code>.</p>"
    if tp is not None and not tp.empty:
        tables = (
            _html_table(tp, "throughput", rename=False)
            + "<h3>Scaling with sequence length</h3>"
            + _html_table(scaling, "scaling", rename=False)
        )
        tables += "<h3>Fast kernels vs. reference path</h3>" + (
            _html_table(speedups, "speedups", rename=False) if not speedups.empty else "<p>none measured on one device</p>"
        )
    return PAGE.format(
        summary=html.escape(summary),
        table=_html_table(df, "runs"),
        correlations=_html_table(corr, "correlations", rename=False) if corr is not None else "",
        throughput=tables,
        figures=figs,
        failed=fails,
        provenance=prov,
    )


def build(store_root: str | Path = "results") -> list[Path]:
    store = Store(store_root)
    records = [r for r in store.records() if "metrics" in r or r.get("status") == "failed"]
    tp_records = Store(Path(store_root) / "throughput").records()
    tp = throughput_rows(tp_records)
    df = rows(records, tp)
    failed = [r for r in records if r.get("status") != "ok"]
    root = Path(store_root)
    root.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, html_path = root / "leaderboard.csv", root / "leaderboard.md", root / "index.html"
    df.to_csv(csv_path, index=False)
    fig_paths = figures([r for r in records if r.get("status") == "ok"], df, root / "figures", tp)
    scaling, speedups = scaling_table(tp), speedup_table(tp)
    corr = correlations(df)
    not_learned = int((df["learned"] != "yes").sum())
    summary = (
        f"{len(df)} groups from {len(records)} runs ({len(failed)} failed); each row is its group's best learning rate, "
        "chosen on the validation split (val accuracy), with test accuracy reported. "
        f"No-recall baseline: the accuracy of the best guess that uses no key-value association, measured on the "
        f"test split; {not_learned} rows are within {LEARNED_MARGIN} of it or below and are marked not learned. "
        "ESS: tolerance "
        "effective state-size per channel, mean over channels, layers, test examples and the interior window "
        "of splits (each record's ess.window). TSS: theoretical state size per channel (attention and Hyena: "
        "the sequence length). cache bytes: decoding state of all layers after L tokens at batch 1."
    )
    for row in corr[corr["rows"] == "learned"].itertuples():
        summary += (
            f" {row.task} (learned rows, n = {row.n}): Spearman of accuracy with ESS/demand {row[5]:.2f}, "
            f"with TSS/demand {row[7]:.2f}."
        )
    text = [
        "# mixerbench leaderboard",
        "",
        summary,
        "Each row's full config, versions and curves are in `records/<record>.json`; rerun it with the command in the README.",
        "",
        _markdown(df),
        "",
        "## Accuracy vs. ESS and TSS per memory demand, per task",
        "",
        _plain_markdown(corr),
    ]
    if not tp.empty:
        text += [
            "",
            "## Throughput",
            "",
            "Measured by `nox -s kernels` (method in `benchmarks/throughput.py`); every row names its device and kernel path. "
            "peak MB is forward + backward: the weights and input plus the peak the call allocates "
            "(CUDA allocator peak; on CPU, the peak increase of the resident set).",
            "",
            _plain_markdown(tp),
            "",
            "### Scaling of time with sequence length",
            "",
            _plain_markdown(scaling),
        ]
        text += ["", "### Fast kernels vs. reference path", ""]
        text += [
            _plain_markdown(speedups)
            if not speedups.empty
            else "No device here had both a fast kernel and the reference path measured."
        ]
    if fig_paths:
        text += ["", "## Figures", ""] + [f"![{n}](figures/{p.name})" for n, p in fig_paths.items()]
    if failed:
        text += ["", "## Failed runs", "", "| record | mixer | error |", "|---|---|---|"]
        for r in failed:
            text.append(
                f"| {r['key']} | {r['config']['architecture'].get('name', '?')} | {r.get('error', '').replace('|', '/')[:200]} |"
            )
    md_path.write_text("\n".join(text) + "\n")
    html_path.write_text(_page(records, df, failed, fig_paths, summary, tp, scaling, speedups, corr))
    return [md_path, csv_path, html_path]


if __name__ == "__main__":
    for p in build(sys.argv[1] if len(sys.argv) > 1 else "results"):
        print(p)
