"""The leaderboard's numbers, from a store's records: one row per run, each group's best run on
validation, and the analyses that test the ESS paper's and Zoology's claims. Pure tables in,
tables out; `benchmarks.figures` draws them and `benchmarks.leaderboard` writes the page.

Every analysis is per task family (one task, all its settings), never pooled across tasks.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks.config import mixer_spec, state_knob
from benchmarks.ess import ess_bound

# A row within this much of its no-recall baseline (or below it) has not learned recall.
LEARNED_MARGIN = 0.01

# The headline tolerance ESS: singular values of a split's block above 1% of the largest singular
# value of the channel's whole operator (every split). A direction whose gain is under 1% of the
# operator's strongest is below bf16's relative precision (2^-7 = 0.8%) and moves the output less
# than rounding does where these models are deployed; `matrix_rank`'s machine-precision default
# instead counts directions of gain 1e-7, which every trained operator has in numbers, so softmax
# attention's default ESS is its geometric bound min(i, L - i) whatever it learned.
HEADLINE_TOLERANCE = "operator:0.01"
MACHINE_TOLERANCE = "machine precision"

# State use, per best row, with the headline ESS against the largest value it can take: the bound,
# the window's mean of min(TSS, i, L - i) (a block T[i:, :i] has rank at most min(i, L - i), so
# attention's ESS can never approach TSS = L; ESS/TSS alone would make it "unsaturated" by
# construction). The thresholds are this suite's choice; the ESS paper describes both without numbers.
SATURATION = 0.9  # saturated: ESS >= 0.9 bound, the state is used up to what it can hold
COLLAPSE = 0.5  # collapsed: ESS < memory demand <= bound and ESS < 0.5 bound: room to hold what the
#                 task needs, but the trained operator uses under half of it and less than the task needs

MAD_TASKS = ("in_context_recall", "noisy_recall", "fuzzy_recall", "selective_copying", "compression", "memorization")


@functools.cache
def state_knob_name(mixer: str) -> str | None:
    """The constructor argument a reference mixer's sweeps vary its state size with (its
    architecture config's `state_sizes`), or None (attention, out-of-tree mixers)."""
    path = Path(__file__).parent / "conf" / "architecture" / f"{mixer}.yaml"
    if not path.exists():
        return None
    knob = state_knob({"architecture": yaml.safe_load(path.read_text()) or {}})
    return knob[0] if knob else None


def _setting(task: dict) -> str:
    if task["name"] == "mqar":
        return f"L={task['seq_len']}, kv={task['num_kv_pairs']}"
    level = task.get("level")
    return (f"level {level}, " if level is not None else "") + f"L={task['seq_len']}"


def _ess_at(ess: dict, tolerance: str) -> float:
    if tolerance == MACHINE_TOLERANCE:
        return ess["ess_mean"]
    return ess.get("ess_mean_by_tolerance", {}).get(tolerance, float("nan"))


def _run_row(r: dict) -> dict:
    m, prov, cfg = r["metrics"], r["provenance"], r["config"]
    mixer, arch = mixer_spec(cfg["architecture"])
    knob = state_knob_name(mixer)
    task = {**cfg["task"], **m["task"]}
    ess = _ess_at(m["ess"], HEADLINE_TOLERANCE)
    return {
        "group": r.get("group", r["key"]),
        "mixer": mixer,
        "task": m["task"]["name"],
        "level": m["task"].get("level", cfg["task"].get("level")),
        "setting": _setting(task),
        "seq_len": m["task"]["seq_len"],
        "memory_demand": m["task"]["memory_demand"],
        "state": f"{knob}={arch[knob]}" if knob and knob in arch else "",
        "accuracy": m["accuracy"],
        "no_recall": m["task"].get("no_recall_accuracy", float("nan")),
        "val_accuracy": m.get("val_accuracy", float("nan")),
        "val_loss": m.get("val_loss", float("nan")),
        "lr": cfg["train"]["lr"],
        "ess": ess,
        "entropy_ess": m["ess"]["entropy_ess_mean"],
        "ess_machine": m["ess"]["ess_mean"],
        "tss": m["tss"],
        "utilization": ess / m["tss"] if m["tss"] else float("nan"),
        "bound": ess_bound(m["tss"], m["task"]["seq_len"], tuple(m["ess"]["window"])),
        "cache_bytes": m["cache_bytes"],
        "parameters": m["parameters"],
        "steps": m["steps"],
        "stopped": m.get("stopped", ""),
        "seed": r["seed"],
        "commit": prov["commit"][:10] + ("+dirty" if prov.get("dirty") else ""),
        "device": prov["device"],
        "kernels": ",".join(m["kernels"]),
        "wall_time_s": r["wall_time_s"],
        "key": r["key"],
    }


RUN_COLUMNS = [  # the order of _run_row's keys
    "group", "mixer", "task", "level", "setting", "seq_len", "memory_demand", "state", "accuracy", "no_recall",
    "val_accuracy", "val_loss", "lr", "ess", "entropy_ess", "ess_machine", "tss", "utilization", "bound", "cache_bytes",
    "parameters", "steps", "stopped", "seed", "commit", "device", "kernels", "wall_time_s", "key",
]  # fmt: skip


def run_rows(records: list[dict]) -> pd.DataFrame:
    """One row per successful run (every learning rate of every group)."""
    return pd.DataFrame([_run_row(r) for r in records if r.get("status") == "ok"], columns=RUN_COLUMNS)


def select_best(runs: pd.DataFrame) -> pd.DataFrame:
    """Each group's best run, chosen on validation (accuracy, then loss), never on test; with the
    grid it was chosen from and the spread of test accuracy over that grid."""
    if runs.empty:
        return runs.assign(lr_grid=pd.Series(dtype=str), grid_spread=pd.Series(dtype=str))
    ranked = runs.sort_values(["group", "val_accuracy", "val_loss", "lr"], ascending=[True, False, True, True])
    best = ranked.groupby("group", sort=False).head(1).set_index("group")
    by_group = runs.groupby("group")
    best["lr_grid"] = by_group["lr"].agg(lambda v: ",".join(f"{x:.2g}" for x in sorted(v)))
    best["grid_spread"] = by_group["accuracy"].agg(lambda v: f"{v.min():.2f}-{v.max():.2f}" if len(v) > 1 else "")
    return best.reset_index()


def best_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation), with `learned`."""
    df = select_best(runs)
    df["learned"] = np.where(df["accuracy"] > df["no_recall"] + LEARNED_MARGIN, "yes", "not learned")
    return df.sort_values(
        ["task", "seq_len", "memory_demand", "accuracy", "mixer", "tss"],
        ascending=[True, True, True, False, True, True],
        ignore_index=True,
    )


# --- accuracy against state size per memory demand (the ESS paper's claim) -------------------------


def _coefficients(part: pd.DataFrame, ess_column: str = "ess") -> dict:
    from scipy import stats

    out = {"n": len(part)}
    demand = part["memory_demand"].clip(lower=1)
    for name, col in (("ESS", ess_column), ("TSS", "tss")):
        x, y = part[col] / demand, part["accuracy"]
        ok = len(part) >= 3 and x.nunique() > 1 and y.nunique() > 1
        out[f"Spearman {name}/demand"] = float(stats.spearmanr(x, y)[0]) if ok else float("nan")
        out[f"Pearson {name}/demand"] = float(stats.pearsonr(x, y)[0]) if ok else float("nan")
    return out


CORRELATION_COLUMNS = ["n", "Spearman ESS/demand", "Spearman TSS/demand", "Pearson ESS/demand", "Pearson TSS/demand"]


def correlations(df: pd.DataFrame, ess_column: str = "ess") -> pd.DataFrame:
    """Accuracy against ESS / memory demand and TSS / memory demand, per task over its best rows that
    learned and, apart, over all of them: Spearman and Pearson coefficients with n (a coefficient
    needs 3 rows and spread on both axes)."""
    out = []
    for task, g in df.groupby("task"):
        for subset, part in (("learned", g[g["learned"] == "yes"]), ("all", g)):
            out.append({"task": task, "rows": subset, **_coefficients(part, ess_column)})
    return pd.DataFrame(out, columns=["task", "rows", *CORRELATION_COLUMNS])


def within_mixer_correlations(df: pd.DataFrame) -> pd.DataFrame:
    """The same coefficients per task and mixer, over that mixer's state sizes and settings (all its
    best rows): does a mixer's own accuracy follow its ESS or its TSS as its state grows?"""
    out = [
        {"task": task, "mixer": mixer, **_coefficients(g)} for (task, mixer), g in df.groupby(["task", "mixer"]) if len(g) >= 3
    ]
    return pd.DataFrame(out, columns=["task", "mixer", *CORRELATION_COLUMNS])


def state_use(df: pd.DataFrame) -> pd.DataFrame:
    """Per best row: ESS against its bound, ESS/demand and whether the state is saturated or collapsed
    (the thresholds SATURATION and COLLAPSE above)."""
    cols = ["task", "setting", "mixer", "state", "memory_demand", "tss", "bound", "ess", "utilization", "accuracy", "learned"]
    out = df[cols].copy()
    out["ESS/bound"] = out["ess"] / out["bound"]
    saturated = out["ess"] >= SATURATION * out["bound"]
    collapsed = (
        (out["ess"] < out["memory_demand"]) & (out["memory_demand"] <= out["bound"]) & (out["ess"] < COLLAPSE * out["bound"])
    )
    out["state use"] = np.select([saturated, collapsed], ["saturated", "collapsed"], default="")
    out["ESS/demand"] = out["ess"] / out["memory_demand"].clip(lower=1)
    return out


# --- MAD score, learning-rate sensitivity, tolerance sensitivity ----------------------------------


def mad_scores(df: pd.DataFrame) -> pd.DataFrame:
    """MAD's score per mixer: per MAD task setting the mixer's best row (its state size chosen on
    validation, as the learning rate was), averaged over the task's settings, then over tasks."""
    mad = df[df["task"].isin(MAD_TASKS)]
    if mad.empty:
        return pd.DataFrame(columns=["mixer", "MAD score", "tasks", "settings"])
    per_setting = (
        mad.sort_values(["val_accuracy", "val_loss"], ascending=[False, True])
        .groupby(["mixer", "task", "setting"], as_index=False)
        .head(1)
    )
    per_task = per_setting.groupby(["mixer", "task"])["accuracy"].mean().unstack("task")
    out = pd.DataFrame({"MAD score": per_task.mean(axis=1)})
    out["tasks"] = per_task.notna().sum(axis=1)
    out["settings"] = per_setting.groupby("mixer").size()
    out = out.join(per_task)
    return out.sort_values("MAD score", ascending=False).reset_index()


def lr_sensitivity(runs: pd.DataFrame) -> pd.DataFrame:
    """Per mixer: how much the learning rate matters (median and largest spread of test accuracy over
    a group's grid), and how often the best rate on validation sits at an edge of the grid (where a
    wider grid might have done better)."""
    if runs.empty:
        return pd.DataFrame()
    best = select_best(runs)
    grid = runs.groupby("group")["lr"].agg(["min", "max", "count"])
    spread = runs.groupby("group")["accuracy"].agg(lambda v: v.max() - v.min())
    best = best.join(grid, on="group").join(spread.rename("spread"), on="group")
    full = best[best["count"] >= 3]
    rows = []
    for mixer, g in full.groupby("mixer"):
        rates = g["lr"].value_counts().sort_index()
        rows.append(
            {
                "mixer": mixer,
                "groups": len(g),
                "median spread": g["spread"].median(),
                "largest spread": g["spread"].max(),
                "best at lowest lr": int((g["lr"] == g["min"]).sum()),
                "best at highest lr": int((g["lr"] == g["max"]).sum()),
                "best lr counts": ", ".join(f"{lr:.2g}: {n}" for lr, n in rates.items()),
            }
        )
    return pd.DataFrame(rows)


def tolerance_sensitivity(records: list[dict], best: pd.DataFrame) -> pd.DataFrame:
    """How the headline and the correlations move with the tolerance: per tolerance, the mean ESS/bound
    and, per task, the Spearman coefficient of accuracy with ESS/demand over all best rows."""
    from benchmarks.ess import RELATIVE_TOLERANCES

    by_key = {r["key"]: r["metrics"]["ess"] for r in records if r.get("status") == "ok"}
    tolerances = [MACHINE_TOLERANCE] + [f"{kind}:{t:g}" for kind in ("block", "operator") for t in RELATIVE_TOLERANCES]
    rows = []
    for tol in tolerances:
        scored = best.assign(ess=[_ess_at(by_key[k], tol) for k in best["key"]])
        row = {
            "tolerance": tol + (" (headline)" if tol == HEADLINE_TOLERANCE else ""),
            "mean ESS/bound": (scored["ess"] / scored["bound"]).mean(),
        }
        for task, g in scored.groupby("task"):
            row[f"{task}: Spearman ESS/demand"] = _coefficients(g)["Spearman ESS/demand"]
        rows.append(row)
    return pd.DataFrame(rows)


def ess_over_training(records: list[dict], best: pd.DataFrame) -> pd.DataFrame:
    """The headline ESS against its bound (as state use measures it) and validation accuracy at the
    evaluations where ESS was recorded, for each group's best run."""
    keep = best.set_index("key")
    rows = []
    for r in records:
        if r.get("status") != "ok" or r["key"] not in keep.index:
            continue
        row = keep.loc[r["key"]]
        for h in r["metrics"].get("history", []):
            if "ess" in h:
                ess = _ess_at(h["ess"], HEADLINE_TOLERANCE)
                rows.append(
                    {
                        "task": row["task"], "setting": row["setting"], "mixer": row["mixer"], "state": row["state"],
                        "step": h["step"], "ESS/bound": ess / row["bound"], "val accuracy": h["val_accuracy"],
                    }
                )  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "setting", "mixer", "state", "step", "ESS/bound", "val accuracy"])


# --- the verdict ---------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def advantage_interval(part: pd.DataFrame, confidence: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval (rows resampled, paired) of |Spearman(accuracy, ESS/demand)| minus
    |Spearman(accuracy, TSS/demand)|: how sure the sign of ESS's advantage is, given n rows."""
    from scipy import stats

    demand = part["memory_demand"].clip(lower=1).to_numpy()
    ess, tss, acc = part["ess"].to_numpy() / demand, part["tss"].to_numpy() / demand, part["accuracy"].to_numpy()
    if len(part) < 4:
        return float("nan"), float("nan")

    def advantage(e, t, a):
        with np.errstate(all="ignore"):
            re, rt = stats.spearmanr(e, a)[0], stats.spearmanr(t, a)[0]
        return abs(np.nan_to_num(re)) - abs(np.nan_to_num(rt))

    res = stats.bootstrap(
        (ess, tss, acc), advantage, paired=True, vectorized=False, n_resamples=999, confidence_level=confidence,
        method="percentile", random_state=0,
    )  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def verdict(corr: pd.DataFrame, within: pd.DataFrame, use: pd.DataFrame, best: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences, one per task family: does accuracy follow ESS/demand more closely than
    TSS/demand (Spearman over all best rows, with a paired bootstrap interval of the difference in
    |coefficient|, and over the rows that learned), within how many mixers, and which rows saturate or
    collapse."""
    out = []
    for task, g in corr.groupby("task"):
        allr = g[g["rows"] == "all"].iloc[0]
        learned = g[g["rows"] == "learned"].iloc[0]
        e, t = allr["Spearman ESS/demand"], allr["Spearman TSS/demand"]
        if math.isnan(e) or math.isnan(t):
            out.append(f"{task}: too few rows with spread for a coefficient (n = {allr['n']}).")
            continue
        lo, hi = advantage_interval(best[best["task"] == task]) if best is not None else (float("nan"), float("nan"))
        diff = abs(e) - abs(t)
        if math.isnan(lo):
            call = "holds" if diff > 0 else "does not hold"
        elif lo > 0:
            call = "holds"
        elif hi < 0:
            call = "does not hold: TSS tracks accuracy better"
        else:
            call = "is not settled by these rows (the interval includes zero)"
        text = (
            f"{task} (n = {allr['n']} best rows): accuracy's Spearman correlation with ESS/demand is {_fmt(e)}, with "
            f"TSS/demand {_fmt(t)}; the difference in |coefficient| is {_fmt(diff)} (95% paired bootstrap interval "
            f"{_fmt(lo)} to {_fmt(hi)}), so the claim that ESS tracks accuracy better {call}. On the {learned['n']} rows "
            f"that learned: {_fmt(learned['Spearman ESS/demand'])} against {_fmt(learned['Spearman TSS/demand'])}."
        )
        w = within[(within["task"] == task)].dropna(subset=["Spearman ESS/demand", "Spearman TSS/demand"])
        if not w.empty:
            better = w[w["Spearman ESS/demand"].abs() > w["Spearman TSS/demand"].abs()]["mixer"].tolist()
            worse = sorted(set(w["mixer"]) - set(better))
            text += (
                f" Within a mixer, across its state sizes and settings, ESS tracks better for {len(better)} of {len(w)} "
                f"mixers ({', '.join(better) or 'none'}); TSS as well or better for {', '.join(worse) or 'none'}."
            )
        u = use[use["task"] == task]
        for kind in ("saturated", "collapsed"):
            hit = u[u["state use"] == kind]
            if not hit.empty:
                text += f" {kind.capitalize()}: " + ", ".join(sorted(set(hit["mixer"]))) + f" ({len(hit)} rows)."
        out.append(text)
    return out


def time_shares(records: list[dict]) -> pd.DataFrame:
    """Where a run's time goes, per mixer, over the runs that recorded it: the share of the summed wall
    time spent in training steps, evaluations, ESS over training and the final ESS."""
    rows = []
    for r in records:
        parts = r.get("metrics", {}).get("seconds") if r.get("status") == "ok" else None
        if parts:
            rows.append({"mixer": mixer_spec(r["config"]["architecture"])[0], "wall": r["wall_time_s"], **parts})
    if not rows:
        return pd.DataFrame()
    by_mixer = pd.DataFrame(rows).groupby("mixer")
    df, runs = by_mixer.sum(numeric_only=True), by_mixer.size()
    out = pd.DataFrame({"runs": runs, "mean run (s)": df["wall"] / runs})
    for part in ("steps", "evaluation", "ess_over_training", "final_ess"):
        out[f"{part.replace('_', ' ')} share"] = df[part] / df["wall"]
    return out.reset_index()


def coverage(store_root: Path, records: list[dict]) -> list[dict]:
    """Planned and finished runs per sweep that wrote a plan into the store (`benchmarks.bench`)."""
    import json

    done = {r["key"]: r for r in records}
    out = []
    for plan in sorted((Path(store_root) / "plans").glob("*.json")):
        keys = json.loads(plan.read_text())["keys"]
        ran = [done[k] for k in keys if k in done]
        out.append(
            {
                "sweep": plan.stem,
                "planned": len(keys),
                "ok": sum(r.get("status") == "ok" for r in ran),
                "failed": sum(r.get("status") == "failed" for r in ran),
                # run time summed over the recorded runs (two workers run two at a time)
                "run_hours": sum(r.get("wall_time_s", 0.0) for r in ran) / 3600,
            }
        )
    return out
