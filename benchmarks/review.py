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

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from benchmarks import analysis, leaderboard, throughput
from benchmarks.bench import _coordinates, _run_line, expand, plan
from benchmarks.config import ConfigError, describe, mixer_spec
from benchmarks.conformance import ConformanceError, check_mixer
from benchmarks.overrides import architecture_from_overrides, explain, normalize, wants_help
from benchmarks.report.columns import BY_KEY, FORMATS
from benchmarks.report.render import _figure, review_page
from benchmarks.report.stats import BELOW_BASELINE
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


# throughput on this machine is trusted to within this factor: two complete runs of one commit agreed
# within 25% on only half their rows and differed by up to 2.9x, so differences under 2x read as noise
# (docs/performance.md, "How far to trust these CPU numbers")
THROUGHPUT_NOISE = 2.0

# the comparison table's columns from the rows (labels and formats: the column registry), then the
# review's own: rank, throughput measured in this process, note
STANDING = ["accuracy", "no_recall", "lr", "steps", "stopped", "ess", "tss", "utilization", "memory_demand", "cache_bytes"]
SHORT_LABELS = {"memory_demand": "demand", "cache_bytes": "cache bytes"}  # the registry's are the keys
FMT = {**FORMATS, "cache bytes": "{:,.0f}", "fwd+bwd tok/s": "{:,.0f}", "decode tok/s": "{:,.0f}"}


def _label(key: str) -> str:
    return SHORT_LABELS.get(key, BY_KEY[key].label)


def _notes(row, unsteady: str = "") -> str:
    notes = []
    if row["tss"] < row["memory_demand"]:
        notes.append("state too small for the task by construction (TSS < demand)")
    if row["learned"] == BELOW_BASELINE:  # under it by more than sampling noise (stats.below_baseline)
        notes.append("below the no-recall baseline")
    if unsteady:
        notes.append("throughput unsteady (see Throughput scaling)")
    return "; ".join(notes)


def unsteady_throughput(tp_records: list[dict]) -> dict[tuple[str, int], str]:
    """(mixer, L) -> why its throughput varies more than THROUGHPUT_NOISE: its timed calls (slowest
    quarter against fastest quarter), two measurements of it, or tokens/s from the next shorter length."""
    out: dict = {}
    measured: dict = {}
    for r in tp_records:
        if r.get("status") != "ok":
            continue
        m = r["metrics"]
        key = (m["mixer"], int(m["seq_len"]))
        for mode, label in (("forward", "forward"), ("forward_backward", "fwd+bwd")):
            times = m.get(f"{mode}_times_s") or []
            q25, q75 = np.percentile(times, [25, 75]) if len(times) >= 4 else (1.0, 1.0)
            if q75 > THROUGHPUT_NOISE * q25:
                out.setdefault(key, []).append(f"{label} repeats spread {q75 / q25:.1f}x")
        measured.setdefault(key, []).append(m["forward_backward_tokens_per_s"])
    for key, v in measured.items():
        if max(v) > THROUGHPUT_NOISE * min(v):
            out.setdefault(key, []).append(f"fwd+bwd {max(v) / min(v):.1f}x between its measurements")
    tp = throughput.throughput_rows(tp_records)
    for (mixer, _device, _kernel), g in tp.groupby(["mixer", "device", "kernel"]):
        g = g.sort_values("L")
        for col in ("forward tok/s", "fwd+bwd tok/s"):
            points = list(zip(g["L"], g[col], strict=True))
            for (l0, a), (l1, b) in zip(points, points[1:], strict=False):
                if max(a / b, b / a) > THROUGHPUT_NOISE:
                    out.setdefault((mixer, int(l1)), []).append(f"{col} {max(a / b, b / a):.1f}x from L {l0}")
    return {k: "; ".join(v) for k, v in out.items()}


def standing(mine: pd.DataFrame, refs: pd.DataFrame, tp: pd.DataFrame, unsteady: dict | None = None) -> dict[str, pd.DataFrame]:
    """Per setting of the review (task setting, width, data, budget and backbone: `protocol`), the new
    mixer beside every reference mixer trained under it: its best row (state size and rate chosen on
    validation), how it trained, its state and cache, and throughput measured in this process."""
    out, unsteady = {}, unsteady or {}
    both = pd.concat([mine, refs], ignore_index=True)
    for _protocol, g in both[both["protocol"].isin(set(mine["protocol"]))].groupby("protocol", sort=False):
        best = g.sort_values(["val_accuracy", "val_loss"], ascending=[False, True]).groupby("mixer").head(1).copy()
        best = best.sort_values("accuracy", ascending=False)
        length = int(best["seq_len"].iloc[0])
        speed = tp[tp["L"] == length].drop_duplicates("mixer", keep="last").set_index("mixer") if not tp.empty else None
        table = pd.DataFrame({"mixer": best["mixer"], "rank": _rank(best["accuracy"], best["learned"] == "yes")})
        for key in STANDING:
            table[_label(key)] = best[key]
        for col in ("fwd+bwd tok/s", "decode tok/s"):
            table[col] = [speed[col].get(m, float("nan")) if speed is not None else float("nan") for m in best["mixer"]]
        table["note"] = [_notes(r, unsteady.get((r["mixer"], length), "")) for _, r in best.iterrows()]
        first = best.iloc[0]
        out[f"{first['task']} {first['setting']} ({first['backbone']} backbone)"] = table.reset_index(drop=True)
    return out


def _range(values: pd.Series, fmt: str) -> str:
    lo, hi = values.min(), values.max()
    return format(lo, fmt) if lo == hi else f"{lo:{fmt}}-{hi:{fmt}}"


def verdict(name: str, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The first screen's sentences: per setting, learned or not, rank among the learners, and ESS
    and TSS against the reference mixers trained under the same protocol."""
    lines = []
    for title, t in tables.items():
        mine, refs = t[t["mixer"] == name], t[t["mixer"] != name]
        if mine.empty:
            continue
        m = mine.iloc[0]
        learners = int((t["rank"] != "not learned").sum())
        acc = f"accuracy {m['accuracy']:.3f}, no-recall baseline {m['no-recall baseline']:.3f}"
        if m["rank"] != "not learned":
            said = f"learned it ({acc}): rank {m['rank']} of the {learners} mixers that learned it"
        else:
            said = f"did not learn it ({acc}); {learners} of the {len(refs)} reference mixers did"
        ess = "ESS not measured" if pd.isna(m["ESS"]) else f"ESS {m['ESS']:.2f}"
        ref_ess = refs["ESS"].dropna()
        if not ref_ess.empty and not pd.isna(m["ESS"]):
            ess += f" against the references' median {ref_ess.median():.2f} ({_range(ref_ess, '.2f')})"
        tss = f"TSS {m['TSS']:g}" + (f" against {_range(refs['TSS'], 'g')}" if not refs.empty else "")
        state = f"{ess}; {tss}" + ("" if not refs.empty else "; no reference mixer was trained under this protocol")
        lines.append(f"{title}: {name} {said}. {state}.")
    learned = sum(1 for t in tables.values() if (t.loc[t["mixer"] == name, "rank"] != "not learned").any())
    if tables:
        lines.insert(0, f"{name} learned {learned} of the {len(tables)} settings of this review.")
    return lines


def _why(name: str, mine: pd.DataFrame) -> str:
    """One line on why a mixer that never learned MQAR is expected not to."""
    mqar = mine[mine["task"] == "mqar"] if not mine.empty else mine
    if mqar.empty or (mqar["learned"] == "yes").any():
        return ""
    return (
        f"Why {name} did not learn MQAR at any setting: MQAR asks for a content-based lookup (a value found by matching "
        "its key, as attention's query-key product does); a mixer without one, such as a gated EMA or a fixed filter, is "
        "expected to stay near the no-recall baseline."
    )


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


def _curve_items(name: str, review_records, reference_records, out_dir: Path) -> list[dict]:
    """Per setting: the mixer's ESS curve beside the nearest reference designs of its protocol (a figure each)."""
    items = []
    my_curves, ref_curves = _curves(review_records), _curves(reference_records)
    for old in out_dir.glob("ess_*.png"):  # curves of settings this review no longer holds must not linger
        old.unlink()
    for key, curves in sorted(my_curves.items(), key=lambda kv: kv[0][1:]):
        if name not in curves:
            continue
        _, task, length, demand = key
        others = {k: v for k, v in ref_curves.get(key, {}).items() if k != name and len(v) == len(curves[name])}
        nearest = nearest_references(curves[name], others)
        fig = _figure_ess(name, curves[name], others, nearest, out_dir / f"ess_{task}_{length}_{demand}.png", (task, length))
        near = ", ".join(f"{n} ({d:.2f})" for n, d in nearest) or "no reference runs under this protocol"
        text = f"{task}, L={length}, memory demand {demand}: nearest by RMS distance of the ESS curve: {near}."
        items.append({"text": text, "path": fig})
    return items


def _utilization(mine: pd.DataFrame) -> pd.DataFrame:
    util = analysis.state_use(mine)[
        ["task", "setting", "memory_demand", "ess", "tss", "bound", "ESS/bound", "ESS/demand", "state use"]
    ]
    too_small = util["tss"] < util["memory_demand"]
    too_small_note = "state too small for the task (TSS < demand)"
    util["state use"] = np.where(too_small, too_small_note, util["state use"].replace("", "neither"))
    return util.rename(columns={"memory_demand": "memory demand", "ess": _label("ess"), "tss": _label("tss")})


def _per_difficulty(mine: pd.DataFrame, refs_same: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": row["task"], "L": row["seq_len"], "memory demand": row["memory_demand"], "accuracy": row["accuracy"],
                "no-recall baseline": row["no_recall"], "learned": row["learned"],
                "best reference accuracy": refs_same.loc[refs_same["protocol"] == row["protocol"], "accuracy"].max(),
            }
            for _, row in mine.iterrows()
        ],
        columns=["task", "L", "memory demand", "accuracy", "best reference accuracy", "no-recall baseline", "learned"],
    )  # fmt: skip


def _throughput(tp_records: list[dict], unsteady: dict) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The throughput table with its unsteady rows named, and the scaling exponents of the mixers whose
    throughput is steady: an exponent fitted through noise would report the noise."""
    tp = throughput.throughput_rows(tp_records)
    if tp.empty:
        return tp, tp, []
    # "% of peak" is against a GPU's datasheet peak: on a CPU it is empty, so it is left out
    tp = tp.drop(columns=["commit"]).dropna(axis=1, how="all")
    tp["unsteady"] = [unsteady.get((m, int(n)), "") for m, n in zip(tp["mixer"], tp["L"], strict=True)]
    scaling = throughput.scaling_table(tp)
    noisy = {m for m, _ in unsteady}
    why = f"not fitted: throughput varies more than {THROUGHPUT_NOISE:g}x"
    scaling["note"] = [why if m in noisy else "" for m in scaling["mixer"]]
    scaling.loc[scaling["mixer"].isin(noisy), ["forward ~ L^", "fwd+bwd ~ L^"]] = float("nan")
    flags = [f"Unsteady throughput, {m} at L {n}: {why}." for (m, n), why in sorted(unsteady.items())]
    return tp, scaling, flags


def _sections(name, conformance, review_records, reference_records, tp_records, out_dir, commands, reference_name) -> dict:
    """Everything the report says, as tables and sentences, for report.md and report.html alike."""
    mine, refs = leaderboard.rows(review_records), leaderboard.rows(reference_records)
    refs = refs[refs["mixer"] != name]
    refs_same = refs[refs["backbone"].isin(set(mine["backbone"]))] if not mine.empty else refs
    unsteady = unsteady_throughput(tp_records)
    tables = standing(mine, refs_same, throughput.throughput_rows(tp_records), unsteady) if not mine.empty else {}
    runs = _runs_table(review_records)
    failed = runs[runs["status"] != "ok"] if not runs.empty else runs
    accuracy = _per_difficulty(mine, refs_same)
    tp, scaling, flags = _throughput(tp_records, unsteady)
    return {
        "name": name,
        "no_success": f"No run of {name} succeeded ({len(failed)} failed: see Runs below), so it cannot be placed."
        if mine.empty
        else "",
        "verdict": verdict(name, tables),
        "why": _why(name, mine),
        "standing": tables,
        "standing_note": (
            f"The mixer under review ({name}, highlighted) beside every reference mixer trained under the same protocol: "
            f"the same task setting, width, data, budget and backbone ({len(refs_same)} reference rows read from "
            f"{reference_name}). Each row is the mixer's best learning rate and state size on validation; test accuracy; "
            f"ESS at the headline tolerance ({analysis.HEADLINE_TOLERANCE}); cache bytes as measured from the decoding "
            "state; throughput measured in this process, at the same threads, for every mixer. Ranks count only rows that "
            f"learned (above the no-recall baseline by {analysis.LEARNED_MARGIN}); rows within {TIE} of each other share a "
            'rank ("2=").'
        ),
        "runs": runs,
        "failed_line": f"{len(failed)} of {len(runs)} runs failed or diverged (their errors below)." if not failed.empty else "",
        "curves": _curve_items(name, review_records, reference_records, out_dir),
        "util": _utilization(mine),
        "util_note": (
            f"ESS (headline tolerance {analysis.HEADLINE_TOLERANCE}) against its bound (the window's mean of min(TSS, i, "
            f"L - i), the most it can be) and the task's memory demand, as on the leaderboard: saturated where ESS >= "
            f"{analysis.SATURATION} bound; collapsed where ESS is below the memory demand although the bound is at least "
            f"the demand, and ESS < {analysis.COLLAPSE} bound."
        ),
        "accuracy": accuracy,
        "accuracy_path": _figure_accuracy(accuracy, out_dir / "accuracy.png") if not accuracy.empty else None,
        "throughput": tp,
        "scaling": scaling,
        "throughput_flags": flags,
        "throughput_note": (
            f"Throughput is flagged where it varies more than {THROUGHPUT_NOISE:g}x (this machine's measured noise between "
            "repeated runs, docs/performance.md) between its timed calls, between two measurements, or from one length to "
            "the next; no scaling exponent is fitted through flagged throughput."
        ),
        "conformance_summary": conformance.summary(),
        "conformance": conformance.message(),
        "commands": commands,
    }


def _markdown(s: dict) -> str:
    """report.md: the sections as GitHub Markdown, tables formatted as on the page."""
    name = s["name"]
    md = [f"# Design review: `{name}`", ""]
    md += [f"**{s['no_success']}**", ""] if s["no_success"] else []
    md += [line for v in s["verdict"] for line in (v, "")] + ([f"**{s['why']}**", ""] if s["why"] else [])
    md += ["## Where it stands", ""]
    for title, table in s["standing"].items():
        md += [f"### {title}", "", leaderboard.markdown_table(table, FMT), ""]
    md += [s["standing_note"], "", "## Runs", "", f"Every run of `{name}` (one per learning rate and setting)."]
    md += [f"**{s['failed_line']}**"] if s["failed_line"] else []
    md += ["", leaderboard.markdown_table(s["runs"], FMT) if not s["runs"].empty else "no runs", ""]
    md += ["## ESS curves beside the nearest reference designs", ""]
    md += [f"- {c['text']} ![ess]({c['path'].name})" for c in s["curves"]] + [""]
    md += ["## State utilization", "", s["util_note"], "", leaderboard.markdown_table(s["util"], FMT), ""]
    md += ["## Accuracy per difficulty", ""]
    if s["accuracy_path"] is not None:
        md += [leaderboard.markdown_table(s["accuracy"], FMT), "", f"![accuracy]({s['accuracy_path'].name})", ""]
    md += ["## Throughput scaling", ""]
    if s["throughput"].empty:
        md += ["no throughput records", ""]
    else:
        md += [s["throughput_note"], "", *[f"- {line}" for line in s["throughput_flags"]], ""]
        md += [leaderboard.markdown_table(s["throughput"], FMT), "", leaderboard.markdown_table(s["scaling"], FMT), ""]
    md += ["## Conformance", "", s["conformance_summary"] + ".", "", "```", s["conformance"], "```", ""]
    md += ["## Reproduce", "", "Every number above comes from these commands (records in this folder):", ""]
    return "\n".join([*md, "```", *s["commands"], "```", ""])


def _html(s: dict) -> str:
    """report.html: the same sections through the leaderboard's renderer (its template's CSS, its table
    renderer, autoescaped), the reviewed mixer's rows highlighted and each figure embedded."""
    name = s["name"]

    def table(df: pd.DataFrame, table_id: str, row_class=None) -> str:
        return leaderboard.html_table(df, table_id, row_class, formats=FMT) if not df.empty else "<p>(none)</p>"

    def standing_rows(t: pd.DataFrame):
        def row_class(i: int) -> str:
            reviewed = "reviewed" if t["mixer"].iloc[i] == name else ""
            return " ".join(c for c in (reviewed, "not-learned" if t["rank"].iloc[i] == "not learned" else "") if c)

        return row_class

    return review_page(
        {
            **{k: s[k] for k in ("name", "no_success", "verdict", "why", "standing_note", "failed_line", "util_note")},
            **{k: s[k] for k in ("throughput_note", "throughput_flags", "conformance_summary", "conformance", "commands")},
            "standing": [
                {"title": title, "table": table(t, f"standing-{i}", standing_rows(t))}
                for i, (title, t) in enumerate(s["standing"].items())
            ],
            "runs": table(s["runs"], "runs"),
            "curves": [{"text": c["text"], "figure": _figure(c["path"].name, c["path"], "")} for c in s["curves"]],
            "util": table(s["util"], "state"),
            "accuracy": table(s["accuracy"], "difficulty"),
            "accuracy_figure": _figure("accuracy", s["accuracy_path"], "") if s["accuracy_path"] is not None else None,
            "throughput": table(s["throughput"], "throughput"),
            "scaling": table(s["scaling"], "scaling"),
        }
    )


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
    """report.md and report.html of a review in `out_dir`: the verdict first, then the comparison,
    the runs, state use, throughput, conformance and the commands that reproduce it."""
    sections = _sections(name, conformance, review_records, reference_records, tp_records, out_dir, commands, reference_name)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(_markdown(sections))
    html_path.write_text(_html(sections))
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


USAGE = (
    "python -m benchmarks.review architecture=NAME|package.module:Class [preset=NAME] [reference=STORE] [out=DIR] "
    "[lengths=128,256] [KEY=VALUE ...]  (other keys: Hydra overrides of benchmarks/conf)"
)


def _usage_error(message: str) -> int:
    print(f"review: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args, USAGE, __doc__):
        return 0
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in REVIEW_ARGS}
    overrides = normalize([a for a in args if a.split("=", 1)[0] not in REVIEW_ARGS])
    name = architecture_from_overrides(overrides)
    if not name:
        return _usage_error("say which mixer, e.g. architecture=examples.gated_ema:GatedEMA; see --help")
    try:  # before anything trains: a bad length would otherwise fail after every run
        lengths = [int(v) for v in opts.get("lengths", "128,256,512,1024").split(",")]
        if not lengths or min(lengths) < 1:
            raise ValueError
    except ValueError:
        return _usage_error(f"lengths={opts['lengths']!r}: give positive integers, e.g. lengths=128,256")
    out_dir = Path(opts.get("out", "reviews")) / folder_name(name)
    try:  # an unknown key or a value of the wrong type: one line, nothing checked or written
        # the reference: the store of the preset's own sweep (`default`: runs/default, which `nox -s bench`
        # trains), whose rows were trained under the same protocol as this review's
        reference_name = opts.get("reference") or expand(overrides)[0]["store"]
        first = expand([*overrides, f"store={out_dir}"])[0]
    except (HydraException, OmegaConfBaseException) as e:
        return _usage_error(f"configuration error: {explain(e, overrides)}")
    report = check_mixer(name, d_model=first["model"]["d_model"], **mixer_spec(first["architecture"])[1])
    print(report.message())
    if not report.passed:
        raise ConformanceError(report.message())
    reference = Store(reference_name)
    if not list(reference.records_dir.glob("*.json")):
        preset = next((a.split("=", 1)[1] for a in overrides if a.startswith("preset=")), "default")
        return _usage_error(
            f"no reference records in {reference.records_dir}: build them with "
            f"`python -m benchmarks.bench preset={preset}` (or give reference=<a store of that preset>)"
        )
    try:
        configs = plan([*overrides, f"store={out_dir}"])  # every run of the preset's ladder at every rate of the grid
    except ConfigError as e:
        return _usage_error(f"configuration error: {e}")
    out_dir.mkdir(parents=True, exist_ok=True)

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
