"""The leaderboard's numbers, from a store's records: one row per run, each group's best run on
validation, and the analyses that test the ESS paper's and Zoology's claims. Pure tables in,
tables out; `benchmarks.figures` draws them and `benchmarks.leaderboard` writes the page.

Every analysis is per task family (one task, all its settings), never pooled across tasks. The ESS
paper's claim is tested within each setting (one length and demand), since pooling settings of
different demand ties accuracy to any state measure / demand through the no-recall baseline; seed
replicates are kept out of the main rows (`first_seed`) and shown apart (`seed_spread`).
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks.config import mixer_spec, state_knob
from benchmarks.ess import ess_bound
from benchmarks.store import design_key, protocol_key

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
SOLVED = 0.9  # a collapsed row at or above this accuracy is reported as solving the task despite its ESS

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
    channels = sum(p["channels"] for p in m["ess"].get("per_layer", [])) or float("nan")
    return {
        "group": r.get("group", r["key"]),
        "design": design_key(cfg),
        "protocol": protocol_key(cfg),
        "mixer": mixer,
        "backbone": cfg.get("model", {}).get("backbone", "mad"),  # records from before the field: MAD's blocks
        "task": m["task"]["name"],
        "level": m["task"].get("level", cfg["task"].get("level")),
        "setting": _setting(task),
        "seq_len": m["task"]["seq_len"],
        "memory_demand": m["task"]["memory_demand"],
        "state": f"{knob}={'default' if arch[knob] is None else arch[knob]}" if knob and knob in arch else "",
        "accuracy": m["accuracy"],
        "no_recall": m["task"].get("no_recall_accuracy", float("nan")),
        "val_accuracy": m.get("val_accuracy", float("nan")),
        "val_loss": m.get("val_loss", float("nan")),
        "lr": cfg["train"]["lr"],
        "ess": ess,
        "ess_total": ess * channels,  # summed over the mixer layers' channels: the whole state it uses
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
    "group", "design", "protocol", "mixer", "backbone", "task", "level", "setting", "seq_len", "memory_demand", "state",
    "accuracy", "no_recall", "val_accuracy", "val_loss", "lr", "ess", "ess_total", "entropy_ess", "ess_machine", "tss",
    "utilization", "bound",
    "cache_bytes", "parameters", "steps", "stopped", "seed", "commit", "device", "kernels", "wall_time_s", "key",
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


def incomplete_groups(records: list[dict]) -> list[str]:
    """Groups whose learning-rate grid a sweep has not finished: a rate that another group of the same
    protocol (task setting, model, data and budget) has tried, ok or failed, this one has not. Their
    best run is not yet the best of the grid, so the leaderboard holds them back until it is."""
    tried: dict[str, tuple[str, set]] = {}
    for r in records:
        cfg = r["config"]
        group = tried.setdefault(r.get("group", r["key"]), (protocol_key(cfg), set()))
        group[1].add(cfg["train"]["lr"])
    grids: dict[str, set] = {}
    for protocol, rates in tried.values():
        grids.setdefault(protocol, set()).update(rates)
    return sorted(g for g, (protocol, rates) in tried.items() if rates < grids[protocol])


def best_rows(runs: pd.DataFrame, held_back: list[str] = ()) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation), with `learned`;
    the groups in `held_back` (`incomplete_groups`) left out."""
    df = select_best(runs[~runs["group"].isin(list(held_back))])
    df["learned"] = np.where(df["accuracy"] > df["no_recall"] + LEARNED_MARGIN, "yes", "not learned")
    return df.sort_values(
        ["task", "seq_len", "memory_demand", "accuracy", "mixer", "tss"],
        ascending=[True, True, True, False, True, True],
        ignore_index=True,
    )


def first_seed(df: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's rows: per design (a group without its seed) the row of its lowest seed, so
    that seed replicates neither repeat rows nor weigh twice in a correlation (`seed_spread` has them)."""
    if df.empty:
        return df
    lowest = df.groupby("design")["seed"].transform("min")
    return df[df["seed"] == lowest].reset_index(drop=True)


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per design trained at two or more seeds (best rows): test accuracy and headline ESS at each
    seed, their ranges, and whether every seed agrees on learned or not."""
    out = []
    for _, g in df.groupby("design", sort=False):
        if g["seed"].nunique() < 2:
            continue
        g = g.sort_values("seed")
        first = g.iloc[0]
        out.append(
            {
                "task": first["task"], "setting": first["setting"], "mixer": first["mixer"], "state": first["state"],
                "seeds": ", ".join(str(x) for x in g["seed"]),
                "accuracy": " / ".join(f"{x:.3f}" for x in g["accuracy"]),
                "accuracy range": float(g["accuracy"].max() - g["accuracy"].min()),
                "ESS": " / ".join(f"{x:.2f}" for x in g["ess"]),
                "ESS range": float(g["ess"].max() - g["ess"].min()),
                "learned": "all" if (g["learned"] == "yes").all() else "none" if (g["learned"] != "yes").all() else "differs",
            }
        )  # fmt: skip
    cols = ["task", "setting", "mixer", "state", "seeds", "accuracy", "accuracy range", "ESS", "ESS range", "learned"]
    return pd.DataFrame(out, columns=cols)


def seed_summary(spread: pd.DataFrame, verdicts: pd.DataFrame, wide: float = 0.1) -> list[str]:
    """Sentences on what the seed replicates say: the designs whose best accuracy moves by more than
    `wide` with the seed (their single-seed rows elsewhere are one draw), and whether the
    within-setting comparison keeps its sign at every seed."""
    out = []
    moved = spread[spread["accuracy range"] > wide]
    for _, r in moved.iterrows():
        state = f" ({r['state']})" if r["state"] else ""
        out.append(
            f"{r['task']} {r['setting']}: {r['mixer']}{state} scores {r['accuracy']} at seeds {r['seeds']} "
            f"(a range of {r['accuracy range']:.2f}): its rows elsewhere on this page are seed {r['seeds'].split(',')[0]}, "
            "one draw of that spread."
        )
    if not spread.empty and moved.empty:
        out.append(f"No replicated design's best accuracy moves by more than {wide} with the seed.")
    for (task, setting), g in verdicts.groupby(["task", "setting"], sort=False):
        gap = g["Spearman ESS"] - g["Spearman TSS"]
        agree = (gap > 0).all() or (gap < 0).all()
        out.append(
            f"{task} {setting}: ESS's Spearman coefficient minus TSS's is "
            + " / ".join(f"{x:.2f}" for x in gap)
            + f" at seeds {', '.join(str(x) for x in g['seed'])}: "
            + ("the same sign at every seed." if agree else "the sign changes with the seed.")
        )
    return out


def seed_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """The within-setting comparison (accuracy's Spearman with ESS and with TSS) at each seed, for the
    settings where three or more designs were trained at more than one seed: does the verdict move
    with the seed?"""
    out = []
    for (task, setting), g in df.groupby(["task", "setting"], sort=False):
        replicated = g.groupby("design")["seed"].nunique()
        designs = replicated[replicated > 1].index
        if len(designs) < 3:
            continue
        part = g[g["design"].isin(designs)]
        for seed, rows in part.groupby("seed"):
            c = _coefficients(rows)
            out.append({"task": task, "setting": setting, "seed": seed, "n": c["n"],
                        "Spearman ESS": c["Spearman ESS/demand"], "Spearman TSS": c["Spearman TSS/demand"]})  # fmt: skip
    return pd.DataFrame(out, columns=["task", "setting", "seed", "n", "Spearman ESS", "Spearman TSS"])


# --- accuracy against state size per memory demand (the ESS paper's claim) -------------------------


def accuracy_above_baseline(df: pd.DataFrame) -> pd.Series:
    """(accuracy - no-recall baseline) / (1 - baseline): 0 at the baseline, 1 at perfect recall. Rows
    that learned nothing score 0 whatever the demand, where their raw accuracy is the baseline itself
    (MQAR: 1/kv, which also scales ESS/kv and TSS/kv: pooled over demands, raw accuracy correlates
    with any state measure divided by the demand, by construction)."""
    return (df["accuracy"] - df["no_recall"]) / (1 - df["no_recall"]).clip(lower=1e-9)


def _coefficients(part: pd.DataFrame, ess_column: str = "ess", target: str = "accuracy") -> dict:
    from scipy import stats

    out = {"n": len(part)}
    demand = part["memory_demand"].clip(lower=1)
    y = part["accuracy"] if target == "accuracy" else accuracy_above_baseline(part)
    for name, col in (("ESS", ess_column), ("TSS", "tss")):
        x = part[col] / demand
        ok = len(part) >= 3 and x.nunique() > 1 and y.nunique() > 1
        out[f"Spearman {name}/demand"] = float(stats.spearmanr(x, y)[0]) if ok else float("nan")
        out[f"Pearson {name}/demand"] = float(stats.pearsonr(x, y)[0]) if ok else float("nan")
    return out


CORRELATION_COLUMNS = ["n", "Spearman ESS/demand", "Spearman TSS/demand", "Pearson ESS/demand", "Pearson TSS/demand"]


def correlations(df: pd.DataFrame, ess_column: str = "ess") -> pd.DataFrame:
    """Accuracy against ESS / memory demand and TSS / memory demand, per task, pooled over its settings
    as the ESS paper pools them: over the best rows that learned, over all of them, and over all of
    them with accuracy above the no-recall baseline (`accuracy_above_baseline`); Spearman and Pearson
    coefficients with n (a coefficient needs 3 rows and spread on both axes)."""
    out = []
    for task, g in df.groupby("task"):
        for subset, part, target in (
            ("learned", g[g["learned"] == "yes"], "accuracy"),
            ("all", g, "accuracy"),
            ("all, accuracy above baseline", g, "above baseline"),
        ):
            out.append({"task": task, "rows": subset, **_coefficients(part, ess_column, target)})
    return pd.DataFrame(out, columns=["task", "rows", *CORRELATION_COLUMNS])


def within_setting_correlations(df: pd.DataFrame) -> pd.DataFrame:
    """Per task and setting (one length and one memory demand, so ESS/demand and TSS/demand are ESS
    and TSS up to a constant): the coefficients over that setting's best rows, every mixer and state
    size. Nothing is shared between the axes here, unlike the pooled coefficients."""
    out = [
        {"task": task, "setting": setting, **_coefficients(g)}
        for (task, setting), g in df.groupby(["task", "setting"], sort=False)
    ]
    return pd.DataFrame(out, columns=["task", "setting", *CORRELATION_COLUMNS])


def within_mixer_correlations(df: pd.DataFrame) -> pd.DataFrame:
    """The coefficients per task and mixer, over that mixer's state sizes and settings (all its best
    rows), with accuracy above the no-recall baseline (so that a mixer at its baseline everywhere
    does not correlate with 1/demand): does a mixer's accuracy follow its ESS or its TSS?"""
    out = [
        {"task": task, "mixer": mixer, **_coefficients(g, target="above baseline")}
        for (task, mixer), g in df.groupby(["task", "mixer"])
        if len(g) >= 3
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
    validation, as the learning rate was), averaged over the task's settings, then over tasks.
    `MAD score` uses only the settings every mixer in `df` has, so that mixers are ranked on the
    same tasks while a sweep is partial; `score, all its settings` uses each mixer's own."""
    mad = df[df["task"].isin(MAD_TASKS)]
    if mad.empty:
        return pd.DataFrame(columns=["mixer", "MAD score", "tasks", "settings"])
    per_setting = (
        mad.sort_values(["val_accuracy", "val_loss"], ascending=[False, True])
        .groupby(["mixer", "task", "setting"], as_index=False)
        .head(1)
    )
    shared = per_setting.groupby(["task", "setting"])["mixer"].transform("nunique") == per_setting["mixer"].nunique()

    def per_task(rows: pd.DataFrame) -> pd.DataFrame:  # mixer x task: the mean over the task's settings
        return rows.groupby(["mixer", "task"])["accuracy"].mean().unstack("task")

    tasks = per_task(per_setting[shared])
    out = pd.DataFrame({"MAD score": tasks.mean(axis=1), "tasks": tasks.notna().sum(axis=1)})
    out["settings"] = per_setting[shared].groupby("mixer").size()
    out["score, all its settings"] = per_task(per_setting).mean(axis=1)
    out["settings run"] = per_setting.groupby("mixer").size()
    out = out.reindex(per_setting["mixer"].unique()).join(tasks)
    return out.sort_values("MAD score", ascending=False).reset_index(names="mixer")


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
    and, per task, the verdict's test (ESS's advantage over TSS in Spearman within settings, the
    weighted mean of `stratified_advantage`) and the Spearman coefficient of accuracy with ESS/demand
    pooled over the task's best rows. TSS does not depend on the tolerance; ESS does."""
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
            row[f"{task}: ESS's advantage within settings"] = stratified_advantage(g, resamples=1)["diff"]
            row[f"{task}: Spearman ESS/demand, pooled"] = _coefficients(g)["Spearman ESS/demand"]
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
    """Bootstrap interval (rows resampled, paired) of Spearman(accuracy, ESS/demand) minus
    Spearman(accuracy, TSS/demand): how sure the sign of ESS's advantage is, given n rows. Signed, as
    the claim is (more effective state, higher accuracy): a negative correlation is no support."""
    from scipy import stats

    demand = part["memory_demand"].clip(lower=1).to_numpy()
    ess, tss, acc = part["ess"].to_numpy() / demand, part["tss"].to_numpy() / demand, part["accuracy"].to_numpy()
    if len(part) < 4:
        return float("nan"), float("nan")

    def advantage(e, t, a):
        with np.errstate(all="ignore"):
            re, rt = stats.spearmanr(e, a)[0], stats.spearmanr(t, a)[0]
        return np.nan_to_num(re) - np.nan_to_num(rt)

    res = stats.bootstrap(
        (ess, tss, acc), advantage, paired=True, vectorized=False, n_resamples=999, confidence_level=confidence,
        method="percentile", random_state=0,
    )  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _rowwise_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's coefficient of each row pair of `(R, n)` arrays (Pearson's of average ranks, as
    scipy.stats.spearmanr computes it); NaN where a row has no spread."""
    from scipy import stats

    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / den, np.nan)


def stratified_advantage(part: pd.DataFrame, confidence: float = 0.95, resamples: int = 999, seed: int = 0) -> dict:
    """ESS against TSS within settings: per setting with 3 or more best rows, Spearman(accuracy, ESS)
    and Spearman(accuracy, TSS); their means over settings weighted by rows; the weighted mean of
    ESS's minus TSS's (signed, as the paper's claim is directional: a coefficient without spread
    counts 0); and its percentile bootstrap interval, rows resampled within each setting so that
    every resample keeps the design."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in part.groupby("setting", sort=True) if len(g) >= 3]
    out = {"settings": len(groups), "n": sum(len(g) for g in groups)}
    if not groups:
        return {**out, "ess": float("nan"), "tss": float("nan"), "diff": float("nan"), "low": float("nan"), "high": float("nan")}
    weights = np.array([len(g) for g in groups], dtype=float) / out["n"]
    coef = np.zeros((len(groups), 2))
    boot = np.zeros(resamples)
    for j, (g, w) in enumerate(zip(groups, weights, strict=True)):
        acc = g["accuracy"].to_numpy(float)
        idx = rng.integers(0, len(g), (resamples, len(g)))
        for k, col in enumerate(("ess", "tss")):
            x = g[col].to_numpy(float)
            coef[j, k] = _rowwise_spearman(x[None], acc[None])[0]
            boot += (1 if k == 0 else -1) * w * np.nan_to_num(_rowwise_spearman(x[idx], acc[idx]))
    defined = ~np.isnan(coef)
    mean = [float(np.average(coef[defined[:, k], k], weights=weights[defined[:, k]])) if defined[:, k].any() else float("nan")
            for k in (0, 1)]  # fmt: skip
    diff = float(np.sum(weights * (np.nan_to_num(coef[:, 0]) - np.nan_to_num(coef[:, 1]))))
    low, high = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {**out, "ess": mean[0], "tss": mean[1], "diff": diff, "low": float(low), "high": float(high)}


def _settings_phrase(k: int) -> str:
    return "its one setting" if k == 1 else f"each of its {k} settings"


def _interval(low: float, high: float, name: str) -> str:
    return "too few rows for an interval" if math.isnan(low) else f"{name} {_fmt(low)} to {_fmt(high)}"


def _call(low: float, high: float, diff: float) -> str:
    if math.isnan(low):
        return "holds" if diff > 0 else "does not hold"
    if low > 0:
        return "holds"
    if high < 0:
        return "does not hold: TSS tracks accuracy better"
    return "is not settled by these rows (the interval includes zero)"


def verdict(corr: pd.DataFrame, within: pd.DataFrame, use: pd.DataFrame, best: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences, one per task family: does accuracy follow ESS more closely than TSS? First
    within each setting (one length and demand: nothing shared between the axes), with a bootstrap
    interval of the difference in Spearman (signed: the claim is that more ESS goes with higher
    accuracy); then pooled over settings as the ESS paper pools them
    (ESS/demand and TSS/demand, with the paired interval), next to how much of that the demand alone
    explains; then within each mixer, and which rows saturate or collapse."""
    out = []
    for task, g in corr.groupby("task"):
        allr = g[g["rows"] == "all"].iloc[0]
        learned = g[g["rows"] == "learned"].iloc[0]
        e, t = allr["Spearman ESS/demand"], allr["Spearman TSS/demand"]
        part = best[best["task"] == task] if best is not None else None
        strat = stratified_advantage(part) if part is not None else {"settings": 0}
        if (math.isnan(e) or math.isnan(t)) and not strat["settings"]:
            out.append(f"{task}: too few rows with spread for a coefficient (n = {allr['n']}).")
            continue
        text = f"{task}:"
        if strat["settings"]:
            text += (
                f" within {_settings_phrase(strat['settings'])} (one length and memory demand; {strat['n']} best rows), "
                f"accuracy's Spearman correlation with ESS averages {_fmt(strat['ess'])}"
                + (" (negative: rows that use more state score lower)" if strat["ess"] < 0 else "")
                + f" and with TSS {_fmt(strat['tss'])}; "
                f"ESS's advantage (its coefficient minus TSS's) is {_fmt(strat['diff'])} "
                f"({_interval(strat['low'], strat['high'], '95% bootstrap interval')}, rows resampled within settings), "
                "so the claim that ESS tracks accuracy "
                f"better {_call(strat['low'], strat['high'], strat['diff'])}."
            )
            if "ess_total" in part and part["ess_total"].notna().all():  # memory spread over channels counts too
                total = stratified_advantage(part.assign(ess=part["ess_total"]))
                text += (
                    f" With ESS summed over the mixer's channels instead of its per-channel mean, the correlation averages "
                    f"{_fmt(total['ess'])} and the advantage is {_fmt(total['diff'])} "
                    f"({_interval(total['low'], total['high'], 'interval')})."
                )
        pooled = part is None or part["setting"].nunique() > 1  # one setting: pooling adds nothing
        if pooled and not (math.isnan(e) or math.isnan(t)):
            lo, hi = advantage_interval(part) if part is not None else (float("nan"), float("nan"))
            demand_alone = _demand_alone(part) if part is not None else float("nan")
            text += (
                f" Pooled over settings as the ESS paper pools them (n = {allr['n']}): ESS/demand {_fmt(e)}, TSS/demand "
                f"{_fmt(t)}, difference {_fmt(e - t)} ({_interval(lo, hi, 'paired interval')})"
            )
            if not math.isnan(demand_alone):  # the demand varies over the settings pooled
                text += (
                    f"; but there 1/demand scales both axes, and 1/demand alone correlates {_fmt(demand_alone)} with "
                    "accuracy (a row at the no-recall baseline scores it), which is why the within-setting comparison "
                    "is the test"
                )
            above = g[g["rows"] == "all, accuracy above baseline"].iloc[0]
            text += (
                f". With accuracy above the baseline instead: {_fmt(above['Spearman ESS/demand'])} against "
                f"{_fmt(above['Spearman TSS/demand'])}; on the "
                f"{learned['n']} rows that learned: {_fmt(learned['Spearman ESS/demand'])} against "
                f"{_fmt(learned['Spearman TSS/demand'])}."
            )
        w = within[(within["task"] == task)].dropna(subset=["Spearman ESS/demand", "Spearman TSS/demand"])
        if not w.empty:
            better = w[w["Spearman ESS/demand"] > w["Spearman TSS/demand"]]["mixer"].tolist()
            worse = sorted(set(w["mixer"]) - set(better))
            text += (
                f" Within a mixer, across its state sizes and settings (accuracy above baseline), ESS tracks better for "
                f"{len(better)} of {len(w)} mixers ({', '.join(better) or 'none'}); TSS as well or better for "
                f"{', '.join(worse) or 'none'}."
            )
        u = use[use["task"] == task]
        for kind in ("saturated", "collapsed"):
            hit = u[u["state use"] == kind]
            if not hit.empty:
                rows = f"{len(hit)} row" + ("s" if len(hit) > 1 else "")
                text += f" {kind.capitalize()}: " + ", ".join(sorted(set(hit["mixer"]))) + f" ({rows})."
                solved = hit[hit["accuracy"] >= SOLVED]
                if kind == "collapsed" and not solved.empty:  # the paper reads collapse as failure to use the state
                    n = len(solved)
                    text += (
                        f" Of these rows, {n} solve{'s' if n == 1 else ''} the task (accuracy >= {SOLVED}) with a "
                        f"per-channel ESS below its demand ({', '.join(sorted(set(solved['mixer'])))})"
                    )
                    total = best.loc[solved.index, "ess_total"] if best is not None and "ess_total" in best else None
                    if total is not None and total.notna().all():  # the memory is there, spread over channels
                        over = int((total >= solved["memory_demand"]).sum())
                        text += (
                            f"; their ESS summed over channels ({total.min():,.0f} to {total.max():,.0f}) reaches the "
                            f"demand in {over} of the {n}" + (": the memory is spread over channels" if over == n else "")
                        )
                    text += "."
        out.append(text)
    return out


def _demand_alone(part: pd.DataFrame) -> float:
    """Spearman(accuracy, 1/demand) over the rows: what pooling settings gives any state measure / demand."""
    from scipy import stats

    x, y = 1 / part["memory_demand"].clip(lower=1), part["accuracy"]
    if len(part) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(x, y)[0])


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
        try:
            keys = json.loads(plan.read_text())["keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError("keys is not a list of strings")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:  # cut short, or not a plan
            print(f"warning: {plan}: not a readable plan ({type(e).__name__}: {e}); its coverage is left out", file=sys.stderr)
            continue
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


# --- the page's first screen: one row per mixer, a short verdict ---------------------------------

FAMILIES = {"mqar": "MQAR", **{t: "MAD" for t in MAD_TASKS}}


def _best_per_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Per mixer, task and setting the best row on validation (its state size chosen as its rate was)."""
    return (
        df.sort_values(["val_accuracy", "val_loss"], ascending=[False, True])
        .groupby(["mixer", "task", "setting"], as_index=False)
        .head(1)
    )


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """One row per mixer, per task family (MQAR; MAD's tasks together): the mean over the family's
    settings that every mixer has of its best test accuracy, on how many of them it learned (above
    the no-recall baseline), and the mean headline ESS and the largest TSS of those rows."""
    if df.empty:
        return pd.DataFrame(columns=["mixer"])
    per = _best_per_setting(df).assign(family=lambda d: d["task"].map(FAMILIES).fillna(d["task"]))
    out = pd.DataFrame(index=sorted(per["mixer"].unique()))
    families = sorted(per["family"].unique(), key=lambda f: (f != "MQAR", f))  # MQAR first: the recall test
    for family in families:
        g = per[per["family"] == family]
        shared = g.groupby(["task", "setting"])["mixer"].transform("nunique") == g["mixer"].nunique()
        g = g[shared]
        if g.empty:
            continue
        by = g.groupby("mixer")
        out[f"{family} acc"] = by["accuracy"].mean()
        out[f"{family} learned"] = by["learned"].agg(lambda v: f"{(v == 'yes').sum()}/{len(v)}")
        out[f"{family} ESS"] = by["ess"].mean()
        out[f"{family} TSS"] = by["tss"].max()
    first = next((c for c in out.columns if c.endswith(" acc")), None)
    out = out.sort_values(first, ascending=False) if first else out
    return out.reset_index(names="mixer")


def short_verdict(best: pd.DataFrame) -> list[str]:
    """At most three sentences: how many mixers learn each family, and, per family, ESS's advantage over
    TSS within settings (the verdict's test) with its interval and what it says."""
    if best.empty:
        return []
    out = []
    family = best["task"].map(FAMILIES).fillna(best["task"])
    learned = best[best["learned"] == "yes"].groupby(family)["mixer"].nunique()
    run = best.groupby(family)["mixer"].nunique()
    out.append(
        "Mixers that learn (above the no-recall baseline on at least one setting): "
        + "; ".join(
            f"{fam} {int(learned.get(fam, 0))} of the {int(run[fam])} run"
            for fam in sorted(run.index, key=lambda f: (f != "MQAR", f))
        )
        + "."
    )
    parts = []
    for task, g in best.groupby("task"):
        strat = stratified_advantage(g)
        if strat["settings"]:
            parts.append(f"{task} {_fmt(strat['diff'])} ({_fmt(strat['low'])} to {_fmt(strat['high'])}: {_call(strat['low'], strat['high'], strat['diff']).split(':')[0].split(' (')[0]})")
    if parts:
        out.append(
            "Does accuracy follow ESS more closely than TSS within a setting (Spearman's coefficient with ESS minus with TSS, "
            "95% interval)? " + "; ".join(parts) + "."
        )
    return out


def ladder(best: pd.DataFrame, task: str = "mqar", solved: float = 0.9, margin: float = 0.2) -> tuple[pd.DataFrame, list[str]]:
    """The task's settings from easiest to hardest (length, then memory demand) as columns, one row per
    mixer: its best test accuracy there (state size and rate chosen on validation; blank where not run),
    a last row with each setting's no-recall baseline; and one sentence per mixer: the easiest setting
    where its best falls below `solved` and the hardest where it is still above the baseline + `margin`."""
    g = best[best["task"] == task]
    if g.empty:
        return pd.DataFrame(columns=["mixer"]), []
    per = _best_per_setting(g)
    order = per.sort_values(["seq_len", "memory_demand"])["setting"].drop_duplicates().tolist()
    table = per.pivot(index="mixer", columns="setting", values="accuracy")[order]
    shared = table.columns[table.notna().all()]  # rank on the settings every mixer has run
    table = table.loc[table[shared if len(shared) else table.columns].mean(axis=1).sort_values(ascending=False).index]
    base = per.drop_duplicates("setting").set_index("setting")["no_recall"][order]
    lines = []
    for mixer, row in table.iterrows():
        ran = row.dropna()
        below = [s for s in ran.index if ran[s] < solved]
        above = [s for s in ran.index if ran[s] > base[s] + margin]
        first = f"first below {solved} at {below[0]} ({ran[below[0]]:.3f})" if below else f"at or above {solved} on all {len(ran)} settings run"
        last = f"above the baseline + {margin} up to {above[-1]} ({ran[above[-1]]:.3f})" if above else f"never above the baseline + {margin}"
        lines.append(f"{mixer}: {first}; {last}.")
    out = pd.concat([table, base.to_frame().T.rename(index={"no_recall": "no-recall baseline"})])
    return out.reset_index(names="mixer"), lines


# --- the backbone ablation: what the short convolution is worth ----------------------------------

BACKBONE_ORDER = ("zoology", "conv_mlp", "mad")
BACKBONE_LABELS = {"zoology": "Zoology's model", "conv_mlp": "MAD's blocks with a BaseConv ahead of the mixer", "mad": "MAD's mixer + MLP blocks"}


def declares(mixer: str, attribute: str) -> bool:
    """Whether the registered mixer's class sets a boolean class attribute (`short_conv`, `linear_in_input`);
    False for a name the registry does not know."""
    from architectures import registry

    try:
        return bool(getattr(registry.resolve(mixer), attribute, False))
    except ValueError:
        return False


def own_conv(mixer: str) -> bool:
    """Whether the mixer carries its own short convolution: then `conv_mlp` builds its `mad` model unchanged."""
    return declares(mixer, "short_conv")


def _without_backbone(cfg: dict) -> str:
    return protocol_key({**cfg, "model": {k: v for k, v in cfg.get("model", {}).items() if k != "backbone"}})


def backbone_ablation(records: list[dict], settings: tuple[str, ...] = ("L=64, kv=4", "L=64, kv=8")) -> pd.DataFrame:
    """Per mixer and MQAR setting, the best test accuracy (state size and rate chosen on validation) and its
    headline ESS in each backbone, over records of one protocol but the backbone (the published MQAR
    protocol's, read from the stores that hold each backbone's runs); the lowest seed only."""
    ok = [r for r in records if r.get("status") == "ok" and r["config"]["task"]["name"] == "mqar"]
    if not ok:
        return pd.DataFrame(columns=["mixer"])
    chosen = []  # per setting, the protocol (but the backbone) that the most backbones, then records, share
    for setting in settings:
        here = [r for r in ok if _setting({**r["config"]["task"], **r["metrics"]["task"]}) == setting]
        by_protocol: dict[str, list] = {}
        for r in here:
            by_protocol.setdefault(_without_backbone(r["config"]), []).append(r)
        if by_protocol:
            chosen += max(by_protocol.values(), key=lambda rs: (len({r["config"]["model"].get("backbone", "mad") for r in rs}), len(rs)))
    if not chosen:
        return pd.DataFrame(columns=["mixer"])
    best = first_seed(best_rows(run_rows(chosen), incomplete_groups(chosen)))
    best = best[best["setting"].isin(settings)]
    per = _best_per_setting(best.assign(task=best["backbone"]))  # one row per mixer, backbone, setting
    out = pd.DataFrame(index=sorted(per["mixer"].unique()))
    for setting in settings:
        for what, col in (("accuracy", "accuracy"), ("ESS", "ess")):
            for backbone in BACKBONE_ORDER:
                g = per[(per["setting"] == setting) & (per["task"] == backbone)].set_index("mixer")
                if not g.empty:
                    out[f"{setting.replace('L=64, ', '')} {what}: {backbone}"] = g[col]
            middle, mad = (f"{setting.replace('L=64, ', '')} {what}: {b}" for b in ("conv_mlp", "mad"))
            if middle in out and mad in out:  # a mixer with its own convolution: its conv_mlp model is its mad model
                same = [m for m in out.index if own_conv(m) and pd.isna(out.loc[m, middle])]
                out.loc[same, middle] = out.loc[same, mad]
        g = per[per["setting"] == setting].drop_duplicates("setting")
        if not g.empty:
            out[f"{setting.replace('L=64, ', '')} no-recall"] = float(g["no_recall"].iloc[0])
    return out.reset_index(names="mixer")


def ablation_findings(table: pd.DataFrame) -> list[str]:
    """One sentence per finding of `backbone_ablation`'s table: which mixers learn only with the
    convolution, which in every backbone, which in none, which lose with Zoology's model."""
    if table.empty:
        return []
    out = []
    for setting in dict.fromkeys(c.split(" ")[0] for c in table.columns if c.startswith("kv=")):
        acc = {b: table.get(f"{setting} accuracy: {b}") for b in BACKBONE_ORDER}
        base = table.get(f"{setting} no-recall")
        if acc["zoology"] is None or acc["mad"] is None or base is None:
            continue
        have = acc["zoology"].notna() & acc["mad"].notna()  # a mixer not yet run in both is left out
        learned = {b: (a > base + 0.2) & have for b, a in acc.items() if a is not None}
        names = table["mixer"]
        conv = names[learned["zoology"] & ~learned["mad"] & have].tolist()
        every = names[learned["zoology"] & learned["mad"]].tolist()
        middle = learned.get("conv_mlp", learned["mad"])
        none = names[~learned["zoology"] & ~learned["mad"] & ~middle & have].tolist()
        loses = names[((acc["mad"] - acc["zoology"]) > 0.1) & have].tolist()
        where = f"MQAR L 64, {setting.replace('=', ' ')}"
        out.append(
            f"{where}: {len(conv)} of {int(have.sum())} mixers learn (accuracy above the no-recall baseline + 0.2) in "
            f"Zoology's model but not in MAD's mixer + MLP blocks: {', '.join(conv) or 'none'}; in both: "
            f"{', '.join(every) or 'none'}; in no backbone: {', '.join(none) or 'none'}."
        )
        if loses:
            lacks_mlp = [m for m in loses if own_conv(m)]
            one_layer = [m for m in loses if not own_conv(m)]
            why = []
            if one_layer:
                why.append(f"{', '.join(one_layer)} (one mixer layer there, after the BaseConv; two in MAD's)")
            if lacks_mlp:
                why.append(f"{', '.join(lacks_mlp)} (their own convolution, so the same two mixer layers; only the MLP is missing)")
            out.append(f"{where}: worse in Zoology's model by more than 0.1: " + "; ".join(why) + ".")
        if acc["conv_mlp"] is not None:
            mid = names[learned["conv_mlp"] & ~learned["mad"] & acc["conv_mlp"].notna()].tolist()
            out.append(f"{where}: the BaseConv alone (MLP kept) makes {len(mid)} learn that do not without it: {', '.join(mid) or 'none'}.")
            ahead = names[((acc["zoology"] - acc["conv_mlp"]) > 0.1) & acc["conv_mlp"].notna() & ~table["mixer"].map(own_conv)]
            if len(ahead):
                out.append(
                    f"{where}: with the BaseConv in both models, Zoology's is ahead by more than 0.1 for {', '.join(ahead)}: "
                    "what it leaves out (the MLP blocks, the second mixer layer) slows them within this budget."
                )
    return out


def backbone_cost(records: list[dict]) -> pd.DataFrame:
    """What a run cost under each backbone, over the MQAR runs recorded (the records' wall_time_s): per
    setting, and over all of them ("all")."""
    rows = [
        {"backbone": r["config"].get("model", {}).get("backbone", "mad"), "setting": _setting({**r["config"]["task"], **r["metrics"]["task"]}),
         "L": r["metrics"]["task"]["seq_len"], "kv": r["metrics"]["task"].get("num_kv_pairs", 0),
         "wall": r["wall_time_s"], "steps": r["metrics"]["steps"]}  # fmt: skip
        for r in records
        if r.get("status") == "ok" and r["config"]["task"]["name"] == "mqar"
    ]
    cols = ["backbone", "setting", "runs", "hours", "median run (s)", "median steps"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)

    def summary(g: pd.DataFrame) -> dict:
        return {"runs": len(g), "hours": g["wall"].sum() / 3600, "median run (s)": g["wall"].median(), "median steps": g["steps"].median()}

    out = []
    for backbone, g in df.groupby("backbone"):
        out.append({"backbone": backbone, "setting": "all", **summary(g)})
        for (_, _, setting), h in g.groupby(["L", "kv", "setting"]):
            out.append({"backbone": backbone, "setting": setting, **summary(h)})
    return pd.DataFrame(out, columns=cols)


LEARNED_LITTLE = 0.05  # a best accuracy this close to the baseline on every setting: nothing worth reading


def never_learned(df: pd.DataFrame, ablation: pd.DataFrame | None = None) -> list[str]:
    """Per task, the mixers that came within LEARNED_LITTLE of the no-recall baseline on every one of its
    settings, each with its largest gain, and why where the evidence says: a mixer linear in its input (as
    the LRU: a fixed filter, the same for every input, cannot route a value by the content of its key), a
    gated convolution (Zoology's finding on its width), and, on MQAR, the backbone ablation's other models
    (where the same mixer does learn, or that none does)."""
    out = []
    for task, g in df.groupby("task"):
        for mixer, m in g.groupby("mixer"):
            gap = (m["accuracy"] - m["no_recall"]).max()
            if gap >= LEARNED_LITTLE:
                continue
            fixed = declares(mixer, "linear_in_input")
            why = ""
            if fixed and task == "mqar":
                why = (
                    " It is linear time-invariant (its operator is the same for every input, which conformance checks against "
                    "the Jacobian of its forward): a fixed filter cannot route a value by the content of its key, so it is "
                    "expected to stay at the baseline."
                )
            elif task == "mqar" and declares(mixer, "gated_convolution"):
                why = (
                    " It is a gated convolution (a long filter that is the same for every input, between elementwise gates): "
                    "Zoology (Arora et al. 2023, arXiv 2312.04927) finds that such a model needs a width growing with the "
                    "sequence length to solve MQAR, where attention does not; the width was not varied here."
                )
            if not fixed and task == "mqar" and ablation is not None and not ablation.empty and mixer in set(ablation["mixer"]):
                row = ablation.set_index("mixer").loc[mixer]
                others = [  # (accuracy, setting, backbone) in the ablation's models other than Zoology's
                    (row[c], c.split(" ")[0], c.rsplit(": ", 1)[1])
                    for c in ablation.columns
                    if " accuracy: " in c and not c.endswith(": zoology") and pd.notna(row[c])
                    and not (c.endswith(": conv_mlp") and own_conv(mixer))  # that cell repeats its mad run
                ]  # fmt: skip
                elsewhere = [
                    f"{acc:.3f} at L 64, {kv.replace('=', ' ')} in {BACKBONE_LABELS[b]} (baseline {row[kv + ' no-recall']:.3g})"
                    for acc, kv, b in others
                    if acc > row[kv + " no-recall"] + 0.2
                ]
                if others and not elsewhere:
                    acc, _, b = max(others)
                    why += f" No other model in the backbone ablation makes it learn either (its best there: {acc:.3f} in {BACKBONE_LABELS[b]})."
                if elsewhere:
                    why += (
                        f" The same mixer learns in another model: {'; '.join(elsewhere)}. So within this protocol's budget "
                        "(2,000 steps, three rates) it needs what that model adds, not more state."
                    )
            if not fixed and "stopped" in m and (m["stopped"] == "budget").any():
                why += (
                    f" {int((m['stopped'] == 'budget').sum())} of its {len(m)} best runs ended at the step budget, not on a "
                    "plateau: still improving, so a longer budget may change this."
                )
            out.append(
                f"{task}: {mixer} stayed within {LEARNED_LITTLE} of the no-recall baseline on "
                f"{'both' if m['setting'].nunique() == 2 else 'all ' + str(m['setting'].nunique())} settings (best accuracy - baseline at most {gap:+.3f}).{why}"
            )
    return out


def backbone_change(new: pd.DataFrame, old: pd.DataFrame, margin: float = 0.2) -> list[str]:
    """What the MQAR leaderboard says in Zoology's model (`new`: the published best rows) against what it
    said in MAD's mixer + MLP blocks (`old`: the best rows of the records moved to mlp_backbone/), on the
    settings both have: which mixers learn (best accuracy above the baseline + `margin` on some setting),
    the accuracy changes larger than 0.1, and the verdict's within-setting test on each."""
    new, old = new[new["task"] == "mqar"], old[old["task"] == "mqar"]
    count = {name: d.groupby("setting")["mixer"].nunique() for name, d in (("new", new), ("old", old))}
    full = max(count["new"].max(), count["old"].max()) if len(count["new"]) and len(count["old"]) else 0
    shared = [  # a setting that one sweep has covered only in part would compare different mixers
        s for s in new.sort_values(["seq_len", "memory_demand"])["setting"].drop_duplicates()
        if count["new"].get(s, 0) == full and count["old"].get(s, 0) == full
    ]  # fmt: skip
    if new.empty or old.empty or not shared:
        return []
    new, old = new[new["setting"].isin(shared)], old[old["setting"].isin(shared)]
    best = {name: _best_per_setting(d) for name, d in (("zoology", new), ("mad", old))}

    def learners(d: pd.DataFrame) -> list[str]:
        return sorted(d[d["accuracy"] > d["no_recall"] + margin]["mixer"].unique())

    mixers = sorted(set(best["zoology"]["mixer"]) & set(best["mad"]["mixer"]))
    now, then = learners(best["zoology"]), learners(best["mad"])
    out = [
        f"On the MQAR settings both models were run at ({'; '.join(shared)}), {len(now)} of {len(mixers)} mixers learn "
        f"(best accuracy above the no-recall baseline + {margin}) in Zoology's model: {', '.join(now) or 'none'}; "
        f"{len(then)} did in MAD's mixer + MLP blocks: {', '.join(then) or 'none'}."
    ]
    a = best["zoology"].set_index(["mixer", "setting"])["accuracy"]
    b = best["mad"].set_index(["mixer", "setting"])["accuracy"]
    both = a.index.intersection(b.index)
    delta = a[both] - b[both]
    for sign, word in ((1, "Higher"), (-1, "Lower")):
        moved = delta[sign * delta > 0.1]
        if moved.empty:
            continue
        per_mixer = []
        for mixer in moved.groupby(level="mixer").mean().mul(sign).sort_values(ascending=False).index:
            cells = [f"{s.replace('L=', 'L ').replace('kv=', 'kv ')} {b[(mixer, s)]:.3f} -> {a[(mixer, s)]:.3f}"
                     for s in shared if (mixer, s) in moved.index]  # fmt: skip
            per_mixer.append(f"{mixer} ({'; '.join(cells)})")
        out.append(f"{word} in Zoology's model by more than 0.1 (MAD's blocks -> Zoology's model): " + ", ".join(per_mixer) + ".")
    parts = []
    for rows, label in ((new, "in Zoology's model"), (old, "in MAD's blocks")):
        strat = stratified_advantage(rows)  # every best row, each state size its own, as the verdict tests
        if strat["settings"]:
            parts.append(f"{_fmt(strat['diff'])} ({_fmt(strat['low'])} to {_fmt(strat['high'])}) {label}")
    if parts:
        out.append("ESS's advantage over TSS within these settings (the verdict's test, 95% interval): " + "; ".join(parts) + ".")
    return out
