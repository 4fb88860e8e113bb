"""Architecture design review: one command places a new mixer beside the reference leaderboard.

    python -m benchmarks.review architecture=examples.gated_ema:GatedEMA
    python -m benchmarks.review architecture=my_pkg.mixers:MyMixer preset=smoke reference=results out=reviews lengths=128,256

Steps: the conformance checks (a failing mixer is rejected with each failed check and by how
much); the preset's task ladder for this mixer (records in `<out>/<mixer>/records`); ESS, TSS and
cache size per run; throughput over a length ladder; then `<out>/<mixer>/report.md` and a
self-contained `report.html` comparing it with the reference rows found in `reference/records`
(by default the store of the preset's own sweep: runs/default for `default`, which `nox -s bench`
trains, results for `published`) that were trained under the same protocol: task setting, width,
data and budget.
Other arguments are Hydra overrides (e.g. `architecture.num_scales=8`, `model.d_model=128`).
"""

from __future__ import annotations

import base64
import html
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks import analysis, leaderboard, throughput
from benchmarks.bench import _coordinates, _run_line, expand, plan
from benchmarks.config import describe, mixer_spec
from benchmarks.conformance import ConformanceError, check_mixer
from benchmarks.overrides import architecture_from_overrides, normalize
from benchmarks.run import run_one
from benchmarks.store import Store, protocol_key

REVIEW_ARGS = ("reference", "out", "lengths")


def folder_name(name: str) -> str:
    """`reviews/<mixer>/`: the mixer's own `name` (GatedEMA's is gated_ema), else its class name."""
    from architectures import registry

    cls = registry.resolve(name)
    own = getattr(cls, "name", None)
    named = isinstance(own, str) and own and own != "mixer"  # "mixer": the base class default, not a name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", own if named else getattr(cls, "__name__", name))


def _curves(records: list[dict]) -> dict:
    """(protocol, task, L, memory demand) -> mixer -> mean ESS curve over its runs under that protocol
    (`benchmarks.store.protocol_key`: the same task setting, width, data and budget)."""
    out: dict = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        task = r["metrics"]["task"]
        key = (protocol_key(r["config"]), task["name"], task["seq_len"], task.get("memory_demand"))
        mixer = mixer_spec(r["config"]["architecture"])[0]
        curve = r["metrics"]["ess"].get("ess_curve_by_tolerance", {}).get(analysis.HEADLINE_TOLERANCE)
        if curve is not None:  # one tolerance everywhere in the report: the headline's
            out.setdefault(key, {}).setdefault(mixer, []).append(curve)
    return {k: {mx: np.mean(v, axis=0) for mx, v in d.items()} for k, d in out.items()}


def nearest_references(mine: np.ndarray, refs: dict, k: int = 3) -> list[tuple[str, float]]:
    """Reference mixers whose ESS curves are closest to `mine` (RMS difference), nearest first."""
    dist = [(name, float(np.sqrt(np.mean((curve - mine) ** 2)))) for name, curve in refs.items()]
    return sorted(dist, key=lambda t: t[1])[:k]


def _figure_ess(mine_name, mine, refs, nearest, path: Path, setting) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(mine, lw=2.5, color="black", label=f"{mine_name} (under review)")
    for name, d in nearest:
        ax.plot(refs[name], lw=1.2, label=f"{name} (RMS distance {d:.2f})")
    ax.set_xlabel("split i")
    ax.set_ylabel(f"mean ESS per channel ({analysis.HEADLINE_TOLERANCE})")
    ax.set_title(f"ESS over position, {setting[0]} L={setting[1]}: nearest reference designs")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _figure_accuracy(table: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(table))
    ax.plot(x, table["accuracy"], "o-", color="black", label="under review")
    ax.plot(x, table["best reference accuracy"], "s--", label="best reference")
    ax.plot(x, table["no-recall baseline"], ":", color="grey", label="no-recall baseline")
    ax.set_xticks(
        x, [f"{t}\nL={n} d={m}" for t, n, m in zip(table["task"], table["L"], table["memory demand"], strict=True)], fontsize=7
    )
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy per difficulty level")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# accuracies this close share a rank (this suite's choice: about two binomial standard errors of a test
# accuracy near 0.9 scored on 4,000 queries, 1,000 test examples x 4 kv pairs)
TIE = 0.01


def _rank(acc: pd.Series, learned: pd.Series) -> pd.Series:
    """Rank by accuracy among the rows that learned, rows within TIE of each other sharing one ("2="),
    "not learned" for the rest: a rank among rows at their baseline would rank noise."""
    out = pd.Series("not learned", index=acc.index, dtype=object)
    ok = acc[learned]
    ranks = {i: 1 + int((ok > a + TIE + 1e-9).sum()) for i, a in ok.items()}  # 1e-9: float noise at the edge
    shared = pd.Series(list(ranks.values())).value_counts()
    for i, r in ranks.items():
        out[i] = f"{r}=" if shared[r] > 1 else str(r)
    return out


def _notes(row) -> str:
    notes = []
    if row["tss"] < row["memory_demand"]:
        notes.append("state too small for the task by construction (TSS < demand)")
    if row["accuracy"] < row["no_recall"]:  # every row below it, also within the learned margin
        notes.append("below the no-recall baseline")
    return "; ".join(notes)


def standing(mine: pd.DataFrame, refs: pd.DataFrame, tp: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per setting of the review (task setting, width, data, budget and backbone: `protocol`), the new
    mixer beside every reference mixer trained under it: its best row (state size and rate chosen on
    validation), how it trained, its state and cache, and throughput measured in this process."""
    out = {}
    both = pd.concat([mine, refs], ignore_index=True)
    for _protocol, g in both[both["protocol"].isin(set(mine["protocol"]))].groupby("protocol", sort=False):
        best = g.sort_values(["val_accuracy", "val_loss"], ascending=[False, True]).groupby("mixer").head(1).copy()
        best = best.sort_values("accuracy", ascending=False)
        length = int(best["seq_len"].iloc[0])
        speed = tp[tp["L"] == length].drop_duplicates("mixer", keep="last").set_index("mixer") if not tp.empty else pd.DataFrame()
        table = pd.DataFrame(
            {
                "mixer": best["mixer"],
                "rank": _rank(best["accuracy"], best["learned"] == "yes"),
                "accuracy": best["accuracy"],
                "no-recall baseline": best["no_recall"],
                "lr": best["lr"],
                "steps": best["steps"],
                "stopped": best["stopped"],
                "ESS": best["ess"],
                "TSS": best["tss"],
                "ESS/TSS": best["utilization"],
                "demand": best["memory_demand"],
                "cache bytes": best["cache_bytes"],
                "fwd+bwd tok/s": [
                    speed["fwd+bwd tok/s"].get(m, float("nan")) if not speed.empty else float("nan") for m in best["mixer"]
                ],
                "decode tok/s": [
                    speed["decode tok/s"].get(m, float("nan")) if not speed.empty else float("nan") for m in best["mixer"]
                ],
                "note": [_notes(r) for _, r in best.iterrows()],
            }
        )
        first = best.iloc[0]
        out[f"{first['task']} {first['setting']} ({first['backbone']} backbone)"] = table.reset_index(drop=True)
    return out


def _runs_table(records: list[dict]) -> pd.DataFrame:
    """Every run of the mixer under review: its rate, how long it trained, why it stopped, and its error;
    sorted by task, length, memory demand and rate."""
    rows, order = [], []
    for r in records:
        m = r.get("metrics", {})
        task = r["config"]["task"]
        rows.append(
            {
                "task": task["name"],
                "setting": analysis._setting({**task, **m.get("task", {})})
                if task["name"] == "mqar" or m
                else task.get("seq_len"),
                "lr": r["config"]["train"]["lr"],
                "status": r["status"],
                "accuracy": m.get("accuracy", float("nan")),
                "steps": m.get("steps", float("nan")),
                "best step": m.get("best_step", float("nan")),
                "stopped": m.get("stopped", ""),
                "error": r.get("error", ""),
            }
        )
        order.append((task["name"], task.get("seq_len") or 0, task.get("num_kv_pairs") or task.get("level") or 0))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    sort = pd.DataFrame(order, columns=["_task", "_length", "_demand"]).assign(_lr=table["lr"])
    return table.loc[sort.sort_values(["_task", "_length", "_demand", "_lr"], kind="stable").index].reset_index(drop=True)


def build_report(
    name: str,
    conformance,
    review_records,
    reference_records,
    tp_records,
    out_dir: Path,
    commands: list[str],
    reference_name: str = "results",
) -> list[Path]:
    mine = leaderboard.rows(review_records)
    refs = leaderboard.rows(reference_records)
    refs = refs[refs["mixer"] != name]
    md: list[str] = [f"# Design review: `{name}`", ""]
    figures: dict[str, Path] = {}

    md += ["## Conformance", "", conformance.summary() + ".", "", "```", conformance.message(), "```", ""]

    refs_same = refs[refs["backbone"].isin(set(mine["backbone"]))] if not mine.empty else refs
    runs_table = _runs_table(review_records)
    failed = runs_table[runs_table["status"] != "ok"] if not runs_table.empty else runs_table
    md += ["## Where it stands", ""]
    if mine.empty:
        md += [f"**No run of `{name}` succeeded** ({len(failed)} failed: see Runs below), so it cannot be placed.", ""]
    tables = standing(mine, refs_same, leaderboard_throughput(tp_records)) if not mine.empty else {}
    md += [
        f"The mixer under review (`{name}`) beside every reference mixer trained under the same protocol: the same task "
        f"setting, width, data, budget and backbone ({len(refs_same)} reference rows read from `{reference_name}`). Each row "
        f"is the mixer's best learning rate and state size on validation; test accuracy; ESS at the headline tolerance "
        f"({analysis.HEADLINE_TOLERANCE}); cache bytes as measured from the decoding state; throughput measured in this "
        f"process, at the same threads, for every mixer. Ranks count only rows that learned (above the no-recall baseline "
        f'by {analysis.LEARNED_MARGIN}); rows within {TIE} of each other share a rank ("2=").',
        "",
    ]
    mqar = mine[mine["task"] == "mqar"] if not mine.empty else mine
    if not mqar.empty and not (mqar["learned"] == "yes").any():
        md += [
            f"**`{name}` did not learn MQAR at any setting.** MQAR asks for a content-based lookup (a value found by "
            "matching its key, as attention's query-key product does); a mixer without one, such as a gated EMA or a "
            "fixed filter, is expected to stay near the no-recall baseline.",
            "",
        ]
    for setting, table in tables.items():
        md += [f"### {setting}", "", leaderboard.markdown_table(table), ""]
    ranks = pd.DataFrame(
        [
            {
                "task": row["task"], "L": row["seq_len"], "memory demand": row["memory_demand"], "accuracy": row["accuracy"],
                "no-recall baseline": row["no_recall"], "learned": row["learned"],
                "best reference accuracy": refs_same.loc[refs_same["protocol"] == row["protocol"], "accuracy"].max(),
            }
            for _, row in mine.iterrows()
        ]
    )  # fmt: skip
    md += ["## Runs", "", f"Every run of `{name}` (one per learning rate and setting)."]
    if not failed.empty:
        md += [f"**{len(failed)} of {len(runs_table)} runs failed or diverged** (their errors below)."]
    md += ["", leaderboard.markdown_table(runs_table) if not runs_table.empty else "no runs", ""]

    # ESS curves beside the nearest reference designs trained under the same protocol
    md += ["## ESS curves beside the nearest reference designs", ""]
    my_curves, ref_curves = _curves(review_records), _curves(reference_records)
    for old in out_dir.glob("ess_*.png"):  # curves of settings this review no longer holds must not linger
        old.unlink()
    for key, curves in sorted(my_curves.items(), key=lambda kv: kv[0][1:]):
        if name not in curves:
            continue
        _, task, length, demand = key
        setting = (task, length)
        others = {k: v for k, v in ref_curves.get(key, {}).items() if k != name and len(v) == len(curves[name])}
        nearest = nearest_references(curves[name], others)
        fig = _figure_ess(name, curves[name], others, nearest, out_dir / f"ess_{task}_{length}_{demand}.png", setting)
        figures[f"ESS curves, {task} L={length} demand {demand}"] = fig
        near = ", ".join(f"{n} ({d:.2f})" for n, d in nearest) or "no reference runs under this protocol"
        where = f"{task}, L={length}, memory demand {demand}"
        md += [f"- {where}: nearest by RMS distance of the ESS curve: {near}. ![ess]({fig.name})"]
    md += [""]

    # state utilization
    util = analysis.state_use(mine)[
        ["task", "setting", "memory_demand", "ess", "tss", "bound", "ESS/bound", "ESS/demand", "state use"]
    ]
    too_small = util["tss"] < util["memory_demand"]
    util["state use"] = np.where(
        too_small, "state too small for the task (TSS < demand)", util["state use"].replace("", "neither")
    )
    md += [
        "## State utilization",
        "",
        f"ESS (headline tolerance {analysis.HEADLINE_TOLERANCE}) against its bound (the window's mean of min(TSS, i, L - i), "
        f"the most it can be) and the task's memory demand, as on the leaderboard: **saturated** where ESS >= "
        f"{analysis.SATURATION} bound; **collapsed** where ESS is below the memory demand although the bound is at least "
        f"the demand, and ESS < {analysis.COLLAPSE} bound.",
        "",
        leaderboard.markdown_table(util.rename(columns={"memory_demand": "memory demand", "ess": "ESS", "tss": "TSS"})),
        "",
    ]

    # accuracy per difficulty
    md += ["## Accuracy per difficulty", ""]
    if not ranks.empty:
        figures["Accuracy per difficulty"] = _figure_accuracy(ranks, out_dir / "accuracy.png")
        md += [
            leaderboard.markdown_table(
                ranks[["task", "L", "memory demand", "accuracy", "best reference accuracy", "no-recall baseline", "learned"]]
            ),
            "",
            "![accuracy](accuracy.png)",
            "",
        ]

    # throughput scaling
    tp = throughput.throughput_rows(tp_records)
    md += ["## Throughput scaling", ""]
    if tp.empty:
        md += ["no throughput records", ""]
    else:
        md += [
            # "% of peak" is against a GPU's datasheet peak: on a CPU it is empty, so it is left out
            leaderboard.markdown_table(tp.drop(columns=["commit"]).dropna(axis=1, how="all")),
            "",
            leaderboard.markdown_table(throughput.scaling_table(tp)),
            "",
        ]

    md += ["## Reproduce", "", "Every number above comes from these commands (records in this folder):", "", "```"]
    md += commands + ["```", ""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md))

    # the same report as one self-contained page: the markdown rendered (tables, emphasis, figures
    # where report.md places them), each figure file embedded as a data URI
    from markdown_it import MarkdownIt

    # no raw HTML: run errors and names come from records and mixers
    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render("\n".join(md))

    def embed(match: re.Match) -> str:
        path = out_dir / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    rendered = re.sub(r'src="([^"]+\.png)"', embed, rendered)
    # wide tables scroll in their own box, so the page itself fits a phone
    rendered = rendered.replace("<table>", '<div class="scroll"><table>').replace("</table>", "</table></div>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px}"
        "th{background:#f0f0f0}td{text-align:right}td:first-child{text-align:left}"
        "pre{font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:.6em}img{max-width:100%}"
        ".scroll{overflow-x:auto;max-width:100%}code{overflow-wrap:anywhere}"
    )
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>Design review: {html.escape(name)}</title><style>{style}</style></head><body>{rendered}</body></html>"
    )
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return [md_path, html_path]


def _plan_line(configs: list[dict], reference: list[dict], lengths: list[int]) -> str:
    """What the review will train, and about how long, at the pace of the reference's runs of the same
    protocol (their mean wall time per run; every reference run where none matches)."""
    times: dict[str, list[float]] = {}
    for r in reference:
        if r.get("status") == "ok" and r.get("wall_time_s"):
            times.setdefault(protocol_key(r["config"]), []).append(float(r["wall_time_s"]))
    every = [t for v in times.values() for t in v]
    seconds = sum(np.mean(times.get(protocol_key(c)) or every or [0.0]) for c in configs)
    settings = sorted({analysis._setting(c["task"]) for c in configs})
    rates = sorted({c["train"]["lr"] for c in configs})
    estimate = f", about {seconds / 60:.0f} min at the reference runs' pace" if seconds else ""
    return (
        f"review: {len(configs)} runs ({'; '.join(settings)}; each at lr {', '.join(f'{r:g}' for r in rates)}){estimate}; "
        f"then throughput at L {', '.join(map(str, lengths))} and beside the reference mixers"
    )


def leaderboard_throughput(records: list[dict]) -> pd.DataFrame:
    return throughput.throughput_rows(records)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in REVIEW_ARGS}
    overrides = normalize([a for a in args if a.split("=", 1)[0] not in REVIEW_ARGS])
    name = architecture_from_overrides(overrides)
    if not name:
        print("review: say which mixer, e.g. architecture=examples.gated_ema:GatedEMA", file=sys.stderr)
        return 2
    try:  # before anything trains: a bad length would otherwise fail after every run
        lengths = [int(v) for v in opts.get("lengths", "128,256,512,1024").split(",")]
        if not lengths or min(lengths) < 1:
            raise ValueError
    except ValueError:
        print(f"review: lengths={opts['lengths']!r}: give positive integers, e.g. lengths=128,256", file=sys.stderr)
        return 2
    out_dir = Path(opts.get("out", "reviews")) / folder_name(name)
    out_dir.mkdir(parents=True, exist_ok=True)

    # the reference: the store of the preset's own sweep (`default`: runs/default, which `nox -s bench`
    # trains), whose rows were trained under the same protocol as this review's
    reference_name = opts.get("reference") or expand(overrides)[0]["store"]
    first = expand([*overrides, f"store={out_dir}"])[0]
    report = check_mixer(name, d_model=first["model"]["d_model"], **mixer_spec(first["architecture"])[1])
    print(report.message())
    if not report.passed:
        raise ConformanceError(report.message())
    reference = Store(reference_name)
    if not list(reference.records_dir.glob("*.json")):
        preset = next((a.split("=", 1)[1] for a in overrides if a.startswith("preset=")), "default")
        print(
            f"review: no reference records in {reference.records_dir}: build them with "
            f"`python -m benchmarks.bench preset={preset}` (or give reference=<a store of that preset>)",
            file=sys.stderr,
        )
        return 2
    configs = plan([*overrides, f"store={out_dir}"])  # every run of the preset's ladder at every rate of the grid

    print(_plan_line(configs, reference.records(), lengths), flush=True)
    for i, cfg in enumerate(configs, 1):
        record = run_one(cfg)
        print(f"[{i}/{len(configs)}] {_coordinates(cfg)}: {_run_line(record)}", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d_model = configs[0]["model"]["d_model"]
    tp_records = throughput.run([name], lengths, str(out_dir), device, d_model=d_model, repeats=3)
    reference = reference.records()
    # the comparison's throughput: every reference mixer of the review's settings and this one, at each
    # setting's length, in this process and at its threads, so that the columns compare
    ref_mixers = sorted({mixer_spec(r["config"]["architecture"])[0] for r in reference if r.get("status") == "ok"} - {name})
    task_lengths = sorted({int(c["task"]["seq_len"]) for c in configs})
    tp_records += throughput.run([name, *ref_mixers], task_lengths, str(out_dir), device, d_model=d_model, repeats=3)

    command = " ".join(["python -m benchmarks.review", *args])
    commands = [
        command,
        f"python -m benchmarks.conformance architecture={name}",
        f"python -m benchmarks.throughput mixers={name} lengths={','.join(map(str, lengths))} d_model={d_model} repeats=3"
        f" store={out_dir}",
        # the comparison table's throughput: every mixer at the settings' lengths
        f"python -m benchmarks.throughput mixers={','.join([name, *ref_mixers])} lengths={','.join(map(str, task_lengths))}"
        f" d_model={d_model} repeats=3 store={out_dir}",
    ]
    mine = Store(out_dir).records()
    paths = build_report(name, report, mine, reference, tp_records, out_dir, commands, reference_name)
    for p in paths:
        print(f"report: {p}")
    failed = [r for r in mine if r.get("status") != "ok"]
    for r in failed:
        print(f"failed: {describe(r['config'])}: {r.get('error', '')}", file=sys.stderr)
    if len(failed) == len(mine):
        print(f"review: no run of {name} succeeded ({len(failed)} failed); the report lists their errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConformanceError as e:
        print(f"\nrejected: {e}", file=sys.stderr)
        sys.exit(2)
