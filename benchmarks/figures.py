"""The leaderboard's figures (seaborn), drawn from `benchmarks.analysis` tables: one set per task,
faceted per task setting, one colour per mixer on every figure, and rows that did not learn marked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report.rows import HEADLINE_TOLERANCE

# one colour and one marker per mixer everywhere: 10+ lines must stay distinguishable
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=1.05)


def style_of(mixers: list[str]) -> tuple[dict, dict]:
    """(palette, markers) for these mixers, the registry's first, in its order."""
    import seaborn as sns

    from architectures import registry

    known = registry.names() + sorted(set(mixers) - set(registry.names()))
    colours = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8)
    palette = {m: colours[i % len(colours)] for i, m in enumerate(known)}
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(known)}
    return palette, markers


def _save(fig, out_dir: Path, name: str, paths: dict[str, Path]) -> None:
    import matplotlib.pyplot as plt

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):  # names come from records: never a path
        raise ValueError(f"figure name {name!r} is not a plain file name")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths[name] = path


def _legend_below(grid, title: str) -> None:
    """The legend under the facets, wide and flat, so it never covers a panel or the title."""
    import seaborn as sns

    sns.move_legend(grid, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=6, title=None, frameon=False)
    if grid.axes_dict and isinstance(next(iter(grid.axes_dict)), str):
        grid.set_titles("{col_name}")
    grid.figure.suptitle(title, y=1.0, fontsize=13)
    grid.figure.tight_layout()


def _settings_order(df: pd.DataFrame) -> list[str]:
    return df.sort_values(["seq_len", "memory_demand", "level"], na_position="first")["setting"].drop_duplicates().tolist()


def _accuracy_figures(task, df, order, mixers, palette, markers, wrap, out_dir, paths) -> None:
    """Accuracy against state size per setting (Zoology's figure), and against ESS and TSS within each setting."""
    import seaborn as sns
    from matplotlib import ticker

    # accuracy against the decoding state (bytes), per setting: Zoology's Figure 2 with state on x
    df["state bytes"] = df["cache_bytes"]
    grid = sns.relplot(
        data=df, x="state bytes", y="accuracy", hue="mixer", hue_order=mixers, style="mixer", style_order=mixers,
        markers=markers, dashes=False, palette=palette, col="setting", col_order=order, col_wrap=wrap, kind="line",
        height=3.6, aspect=1.25, markersize=8, facet_kws={"sharex": True},
    )  # fmt: skip
    for setting, ax in grid.axes_dict.items():
        rows = df[df["setting"] == setting]
        ax.set_xscale("log", base=2)
        ax.axhline(rows["no_recall"].mean(), color="black", ls="--", lw=1)
        nl = rows[rows["learned"] != "yes"]
        ax.scatter(nl["state bytes"], nl["accuracy"], s=90, facecolors="none", edgecolors="black", lw=1, zorder=6)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(setting)
    grid.set_axis_labels("decoding state of the model (bytes, log scale)", "test accuracy")
    _legend_below(grid, f"{task}: accuracy vs. state size per setting (dashed: no-recall baseline; circled: not learned)")
    _save(grid.figure, out_dir, f"{task}_accuracy_vs_state", paths)

    # accuracy against ESS and TSS within each setting (the verdict's test): ESS above, TSS below
    long = df.melt(
        id_vars=["mixer", "accuracy", "learned", "setting"], value_vars=["ess", "tss"], var_name="measure", value_name="size"
    ).replace({"measure": {"ess": f"ESS ({HEADLINE_TOLERANCE})", "tss": "TSS"}})
    grid = sns.relplot(
        data=long, x="size", y="accuracy", hue="mixer", hue_order=mixers, style="mixer", style_order=mixers,
        markers=markers, palette=palette, row="measure", col="setting", col_order=order, height=2.9, aspect=1.0, s=60,
        facet_kws={"sharex": False, "sharey": True, "margin_titles": False},
    )  # fmt: skip
    for (measure, setting), ax in grid.axes_dict.items():
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 4, 8, 16: no crowded 2^x labels
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(f"{setting}", fontsize=10)
        ax.set_xlabel(f"{measure.split(' ')[0]} per channel (log scale)")
        ax.set_ylim(-0.02, 1.02)
    grid.set_ylabels("test accuracy")
    _legend_below(grid, f"{task}: accuracy vs. ESS (top) and TSS (bottom) within each setting")
    _save(grid.figure, out_dir, f"{task}_accuracy_vs_ess", paths)


def task_figures(
    task: str,
    best: pd.DataFrame,
    training: pd.DataFrame,
    curves: pd.DataFrame,
    out_dir: Path,
    learning: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """The figures of one task: accuracy against state size per setting (Zoology's figure), accuracy
    against ESS and against TSS within each setting, ESS curves over the split, ESS/bound over
    training, and validation accuracy against sequences seen (`learning`: rows.learning_curves)."""
    _setup()
    import matplotlib.pyplot as plt
    import seaborn as sns

    paths: dict[str, Path] = {}
    df = best[best["task"] == task].copy()
    if df.empty:
        return paths
    palette, markers = style_of(df["mixer"].unique().tolist())
    order = _settings_order(df)
    mixers = [m for m in palette if m in set(df["mixer"])]
    wrap = min(3, len(order))

    _accuracy_figures(task, df, order, mixers, palette, markers, wrap, out_dir, paths)

    # ESS over the split position, per setting (each mixer's largest state)
    c = curves[curves["task"] == task]
    if not c.empty:
        grid = sns.relplot(
            data=c, x="split i", y="ESS", hue="mixer", hue_order=mixers, style="mixer", style_order=mixers, markers=False,
            dashes=True, palette=palette, col="setting", col_order=[s for s in order if s in set(c["setting"])],
            col_wrap=wrap, kind="line", height=3.6, aspect=1.25, errorbar=None, facet_kws={"sharex": False},
        )  # fmt: skip
        for ax in grid.axes.flat:
            ax.set_yscale("symlog", linthresh=1)
            ax.set_ylim(bottom=0)
        grid.set_axis_labels("split i", f"ESS ({HEADLINE_TOLERANCE}), log scale")
        _legend_below(grid, f"{task}: ESS over the split, each mixer's largest state")
        _save(grid.figure, out_dir, f"{task}_ess_curves", paths)

    # ESS / TSS over training, per setting
    t = training[training["task"] == task].replace({"state": {"": "fixed (no knob)"}})
    if not t.empty:
        grid = sns.relplot(
            data=t, x="step", y="ESS/bound", hue="mixer", hue_order=mixers, style="state", markers=True, palette=palette,
            col="setting", col_order=[s for s in order if s in set(t["setting"])], col_wrap=wrap, kind="line",
            height=3.6, aspect=1.25, errorbar=None,
        )  # fmt: skip
        for ax in grid.axes.flat:
            ax.set_xscale("log")
            ax.set_ylim(0, 1.05)
        grid.set_axis_labels("training step (log scale)", "ESS / bound")
        _legend_below(grid, f"{task}: state use over training (headline ESS / its bound, at log-spaced evaluations)")
        _save(grid.figure, out_dir, f"{task}_ess_over_training", paths)
    if learning is not None:
        _learning_figure(task, df, learning, order, mixers, palette, wrap, out_dir, paths)
    plt.close("all")
    return paths


def _learning_figure(task, df, learning, order, mixers, palette, wrap, out_dir, paths) -> None:
    """Validation accuracy against training sequences seen, per setting, for each mixer's best run over
    its state sizes: how each model got where it ended (the sample-efficiency picture)."""
    import seaborn as sns

    top = df.sort_values("val_accuracy").groupby(["setting", "mixer"]).tail(1)[["key", "setting", "mixer"]]
    lc = learning.merge(top, on="key")
    if lc.empty:
        return
    grid = sns.relplot(
        data=lc, x="sequences", y="val accuracy", hue="mixer", hue_order=mixers, palette=palette, col="setting",
        col_order=[s for s in order if s in set(lc["setting"])], col_wrap=wrap, kind="line", height=3.6, aspect=1.25,
        errorbar=None, facet_kws={"sharex": False},
    )  # fmt: skip
    for setting, ax in grid.axes_dict.items():
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(df[df["setting"] == setting]["no_recall"].mean(), color="black", ls="--", lw=1)
        ax.set_title(setting)
    grid.set_axis_labels("training sequences seen (log scale)", "validation accuracy")
    _legend_below(grid, f"{task}: validation accuracy against sequences seen, each mixer's best run (dashed: no-recall baseline)")
    _save(grid.figure, out_dir, f"{task}_learning_curves", paths)


def ess_curves(records: list[dict], best: pd.DataFrame) -> pd.DataFrame:
    """Each setting's ESS curve (headline tolerance, per split) for each mixer's largest state among
    the best rows: the largest TSS, then (where sizes share a TSS, as Hyena's filter orders do) the
    largest value of the state knob, so the choice never depends on the order the records were read in."""
    order = best.sort_values(["tss", "state_value", "key"], kind="stable")
    largest = order.groupby(["task", "setting", "mixer"]).tail(1).set_index("key")
    rows = []
    for r in records:
        if r.get("status") != "ok" or r["key"] not in largest.index:
            continue
        row, e = largest.loc[r["key"]], r["metrics"]["ess"]
        curve = e.get("ess_curve_by_tolerance", {}).get(HEADLINE_TOLERANCE, e["ess_curve"])
        for i, v in zip(e["positions"], curve, strict=True):
            rows.append({"task": row["task"], "setting": row["setting"], "mixer": row["mixer"], "split i": i, "ESS": v})
    return pd.DataFrame(rows, columns=["task", "setting", "mixer", "split i", "ESS"])


def throughput_figure(tp: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    _setup()
    import seaborn as sns
    from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

    paths: dict[str, Path] = {}
    if tp is None or tp.empty:
        return paths
    palette, markers = style_of(tp["mixer"].unique().tolist())
    grid = sns.relplot(
        data=tp, x="L", y="forward tok/s", hue="mixer", palette=palette, style="kernel", col="device", kind="line",
        marker="o", height=4.2, aspect=1.4, facet_kws={"sharey": False},
    )  # fmt: skip
    for ax in grid.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatterSciNotation())
        ax.yaxis.set_minor_formatter(NullFormatter())
    _legend_below(grid, "Forward throughput vs. sequence length (one panel per device)")
    _save(grid.figure, out_dir, "throughput_vs_length", paths)
    return paths


def ess_vs_tss(best: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    _setup()
    import matplotlib.pyplot as plt
    import seaborn as sns

    paths: dict[str, Path] = {}
    if best.empty:
        return paths
    palette, markers = style_of(best["mixer"].unique().tolist())
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    sns.scatterplot(data=best, x="tss", y="ess", hue="mixer", style="mixer", markers=markers, palette=palette, s=80, ax=ax)
    top = max(best["tss"].max(), best["ess"].max(), 1)
    xs = np.array([0.5, top])
    ax.plot(xs, xs, "k:", lw=1, label="ESS = TSS")
    ax.plot(xs, 0.9 * xs, color="grey", lw=0.8, ls="--", label="saturation (0.9 TSS)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("TSS per channel (log)")
    ax.set_ylabel(f"mean ESS per channel ({HEADLINE_TOLERANCE}, log)")
    ax.set_title("ESS vs. TSS, every best row of every task")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, out_dir, "ess_vs_tss", paths)
    return paths


def headline_figure(best: pd.DataFrame, out_dir: Path, task: str = "mqar") -> dict[str, Path]:
    """The page's first figure: accuracy against headline ESS within each setting of `task` (the verdict's
    test), small panels in one or two rows, one colour per mixer, the no-recall baseline dashed."""
    _setup()
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    paths: dict[str, Path] = {}
    df = best[best["task"] == task]
    if df.empty:
        return paths
    order = _settings_order(df)
    palette, markers = style_of(df["mixer"].unique().tolist())
    cols = min(len(order), 4)
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 0.4, 1.9 * rows + 0.7), sharey=True, squeeze=False)
    for ax, setting in zip(axes.flat, order, strict=False):  # the grid may have spare axes
        g = df[df["setting"] == setting]
        for mixer, m in g.groupby("mixer"):
            ax.scatter(m["ess"].clip(lower=0.5), m["accuracy"], s=22, color=palette[mixer], marker=markers[mixer], label=mixer)
        ax.axhline(float(g["no_recall"].iloc[0]), color="#888", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(setting, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes.flat[len(order):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel(f"ESS ({HEADLINE_TOLERANCE})", fontsize=8)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.collections}
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=5, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.02)
    )
    fig.tight_layout(rect=(0, 0.1 if rows == 1 else 0.07, 1, 1))
    _save(fig, out_dir, f"headline_{task}", paths)
    return paths


def family_figure(rows: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """The ESS paper's figure for the within-family test (`tables.family_rows`): test accuracy against
    ESS/demand (left) and TSS/demand (right), one colour per family, one marker per setting, log x."""
    _setup()
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    paths: dict[str, Path] = {}
    import seaborn as sns

    for task, df in rows.groupby("task"):
        families = sorted(df["mixer"].unique())  # a few families: colours of their own, far apart
        palette = dict(zip(families, sns.color_palette("tab10", len(families)), strict=True))
        settings = _settings_order(df)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
        demand = df["memory_demand"].clip(lower=1)
        for ax, column, name in ((axes[0], "ess", f"ESS ({HEADLINE_TOLERANCE}) / demand"), (axes[1], "tss", "TSS / demand")):
            for (mixer, setting), g in df.groupby(["mixer", "setting"]):
                g = g.sort_values(column)
                ax.plot(g[column] / demand[g.index], g["accuracy"], color=palette[mixer], lw=0.8, alpha=0.6,
                        marker=MARKERS[settings.index(setting) % len(MARKERS)], ms=5, label=f"{mixer}, {setting}")  # fmt: skip
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel(name, fontsize=9)
            ax.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel("test accuracy", fontsize=9)
        fig.suptitle(f"{task}: accuracy against state size within a family (each line: one mixer's sizes at one setting)",
                     fontsize=10)  # fmt: skip
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.12))
        fig.tight_layout(rect=(0, 0.08, 1, 0.95))
        _save(fig, out_dir, f"{task}_state_family", paths)
    return paths
