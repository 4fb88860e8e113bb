"""Rows -> the page's tables. Every analysis is per task family (one task, all its settings), never
pooled across tasks; tables are tidy (one row per observation) and made wide only where the page shows
them (`ablation_table`, `ladder`, `headline`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.report.rows import (
    FAMILIES,
    HEADLINE_TOLERANCE,
    MACHINE_TOLERANCE,
    MAD_TASKS,
    _ess_at,
    backbone_of,
    budgets,
    cost_rows,
    ess_by_key,
    history_rows,
    incomplete_groups,
    mqar_by_protocol,
    own_conv,
    run_rows,
    time_rows,
)  # fmt: skip
from benchmarks.report.stats import (
    COLLAPSE,
    MEDIAN_SEEDS,
    SATURATION,
    _coefficients,
    accuracy_above_baseline,
    best_per_setting,
    best_rows,
    distinct,
    first_seed,
    learned_flag,
    median_seed_rows,
    same_model,
    select_best,
    shared_settings,
    stratified_advantage,
    within_setting_coefficient,
)  # fmt: skip
from benchmarks.throughput import throughput_rows

CORRELATION_COLUMNS = ["n", "Spearman ESS/demand", "Spearman TSS/demand", "Pearson ESS/demand", "Pearson TSS/demand"]


def correlations(df: pd.DataFrame, ess_column: str = "ess") -> pd.DataFrame:
    """Accuracy against ESS / memory demand and TSS / memory demand, per task, pooled over its settings
    as the ESS paper pools them: over the best rows that learned, over all of them, and over all of
    them with accuracy above the no-recall baseline (`accuracy_above_baseline`); Spearman and Pearson
    coefficients with n (a coefficient needs 3 rows and spread on both axes). A row that repeats
    another mixer's model (`same_model`) counts once."""
    out = []
    for task, g in distinct(df).groupby("task"):
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
        for (task, setting), g in distinct(df).groupby(["task", "setting"], sort=False)
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


def mad_scores(df: pd.DataFrame) -> pd.DataFrame:
    """MAD's score per mixer: per MAD task setting the mixer's best row (its state size chosen on
    validation, as the learning rate was), averaged over the task's settings, then over tasks.
    `MAD score` uses only the settings every mixer in `df` has whole, so that mixers are ranked on the
    same tasks while a sweep is partial; `score, all its settings` uses each mixer's own."""
    mad = df[df["task"].isin(MAD_TASKS)]
    if mad.empty:
        return pd.DataFrame(columns=["mixer", "MAD score", "tasks", "settings"])
    per_setting, shared_rows = best_per_setting(mad), best_per_setting(mad[shared_settings(mad)])

    def per_task(rows: pd.DataFrame) -> pd.DataFrame:  # mixer x task: the mean over the task's settings
        return rows.groupby(["mixer", "task"])["accuracy"].mean().unstack("task")

    tasks = per_task(shared_rows)
    out = pd.DataFrame({"MAD score": tasks.mean(axis=1), "tasks": tasks.notna().sum(axis=1)})
    out["settings"] = shared_rows.groupby("mixer").size()
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

    by_key = ess_by_key(records)
    tolerances = [MACHINE_TOLERANCE] + [f"{kind}:{t:g}" for kind in ("block", "operator") for t in RELATIVE_TOLERANCES]
    rows = []
    for tol in tolerances:
        scored = best.assign(ess=[_ess_at(by_key[k], tol) for k in best["key"]])
        row = {
            "tolerance": tol + (" (headline)" if tol == HEADLINE_TOLERANCE else ""),
            "mean ESS/bound": (scored["ess"] / scored["bound"]).mean(),
        }
        for task, g in scored.groupby("task"):
            row[f"{task}: ESS's advantage within settings"] = stratified_advantage(g, resamples=0)["diff"]
            row[f"{task}: Spearman ESS/demand, pooled"] = _coefficients(distinct(g))["Spearman ESS/demand"]
        rows.append(row)
    return pd.DataFrame(rows)


def ess_over_training(records: list[dict], best: pd.DataFrame) -> pd.DataFrame:
    """The headline ESS against its bound (as state use measures it) and validation accuracy at the
    evaluations where ESS was recorded, for each group's best run."""
    cols = ["task", "setting", "mixer", "state", "step", "ESS/bound", "val accuracy"]
    h = history_rows(records, best["key"])
    if h.empty:
        return pd.DataFrame(columns=cols)
    keep = best.drop_duplicates("key").set_index("key")[["task", "setting", "mixer", "state", "bound"]]
    h = h.join(keep, on="key")
    return h.assign(**{"ESS/bound": h["ess"] / h["bound"]})[cols].reset_index(drop=True)


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


def seed_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """The within-setting comparison (accuracy's Spearman with ESS and with TSS) at each seed, for the
    settings where three or more designs were trained at more than one seed: does the verdict move
    with the seed?"""
    out = []
    for (task, setting), g in distinct(df.assign(same_as=same_model(df))).groupby(["task", "setting"], sort=False):
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


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """One row per mixer, per task family (MQAR; MAD's tasks together), every column the mean over the
    same rows, the mixer's best row on each of the family's settings every mixer has whole: test accuracy,
    accuracy above the no-recall baseline ((acc - base) / (1 - base): settings of different baselines
    average fairly), headline ESS and TSS; and on how many of those settings it learned."""
    if df.empty:
        return pd.DataFrame(columns=["mixer"])
    rows = df.assign(family=df["task"].map(FAMILIES).fillna(df["task"]))
    out = pd.DataFrame(index=sorted(rows["mixer"].unique()))
    families = sorted(rows["family"].unique(), key=lambda f: (f != "MQAR", f))  # MQAR first: the recall test
    for family in families:
        g = rows[rows["family"] == family]
        g = best_per_setting(g[shared_settings(g)])
        if g.empty:
            continue
        g = g.assign(above=accuracy_above_baseline(g) if "no_recall" in g else np.nan)
        by = g.groupby("mixer")
        out[f"{family} acc"] = by["accuracy"].mean()
        out[f"{family} acc above base"] = by["above"].mean()
        out[f"{family} learned"] = by["learned"].agg(lambda v: f"{(v == 'yes').sum()}/{len(v)}")
        out[f"{family} ESS"] = by["ess"].mean()
        out[f"{family} TSS"] = by["tss"].mean()
    first = next((c for c in out.columns if c.endswith(" acc")), None)
    out = out.sort_values(first, ascending=False) if first else out
    return out.reset_index(names="mixer")


def backbone_cost(records: list[dict]) -> pd.DataFrame:
    """What a run cost under each backbone, over the MQAR runs recorded (the records' wall_time_s): per
    setting, and over all of them ("all")."""
    df = cost_rows(records)
    cols = ["backbone", "setting", "runs", "hours", "median run (s)", "median steps"]
    if df.empty:
        return pd.DataFrame(columns=cols)

    def summary(g: pd.DataFrame) -> dict:
        return {
            "runs": len(g),
            "hours": g["wall"].sum() / 3600,
            "median run (s)": g["wall"].median(),
            "median steps": g["steps"].median(),
        }

    out = []
    for backbone, g in df.groupby("backbone"):
        out.append({"backbone": backbone, "setting": "all", **summary(g)})
        for (_, _, setting), h in g.groupby(["L", "kv", "setting"]):
            out.append({"backbone": backbone, "setting": setting, **summary(h)})
    return pd.DataFrame(out, columns=cols)


def time_shares(records: list[dict]) -> pd.DataFrame:
    """Where a run's time goes, per mixer, over the runs that recorded it: the share of the summed wall
    time spent in training steps, evaluations, ESS over training and the final ESS."""
    rows = time_rows(records)
    if rows.empty:
        return pd.DataFrame()
    by_mixer = rows.groupby("mixer")
    df, runs = by_mixer.sum(numeric_only=True), by_mixer.size()
    out = pd.DataFrame({"runs": runs, "mean run (s)": df["wall"] / runs})
    for part in ("steps", "evaluation", "ess_over_training", "final_ess"):
        out[f"{part.replace('_', ' ')} share"] = df[part] / df["wall"]
    return out.reset_index()


BACKBONE_ORDER = ("zoology", "conv_mlp", "mad")
ABLATION_SETTINGS = ("L=64, kv=4", "L=64, kv=8")
ABLATION_COLUMNS = ["mixer", "setting", "backbone", "accuracy", "ess", "no_recall", "repeated"]


def _ablation_records(records: list[dict], settings) -> list[dict]:
    """Per setting, the records of the protocol (but the backbone) that the most backbones, then records, share."""
    chosen = []
    for setting in settings:
        groups = mqar_by_protocol(records, setting)
        if groups:
            chosen += max(groups, key=lambda rs: (len({backbone_of(r["config"]) for r in rs}), len(rs)))
    return chosen


def backbone_ablation(records: list[dict], settings: tuple[str, ...] = ABLATION_SETTINGS) -> pd.DataFrame:
    """Per mixer, MQAR setting and backbone (tidy: one row each), the best test accuracy (state size and
    rate chosen on validation) and its headline ESS, over records of one protocol but the backbone (the
    published MQAR protocol's, read from the stores that hold each backbone's runs); the lowest seed only.
    A mixer with its own convolution gets its mad row again as its conv_mlp row (`repeated`): conv_mlp
    builds its mad model unchanged. `no_recall` is the setting's baseline; `budget` and `rates` the protocol's."""
    chosen = _ablation_records(records, settings)
    if not chosen:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    best = first_seed(best_rows(run_rows(chosen), incomplete_groups(chosen)))
    best = best[best["setting"].isin(settings)]
    per = best_per_setting(best.assign(task=best["backbone"])).rename(columns={"task": "_b"})
    per = per.assign(backbone=per["_b"], repeated=False).join(budgets(chosen).set_index("group"), on="group")
    out = []
    for setting in settings:
        g = per[per["setting"] == setting]
        if g.empty:
            continue
        g = g.assign(no_recall=float(g["no_recall"].iloc[0]))
        have = set(g["backbone"])
        if {"conv_mlp", "mad"} <= have:  # a mixer with its own convolution: its conv_mlp model is its mad model
            ran = set(g[g["backbone"] == "conv_mlp"]["mixer"])
            same = g[(g["backbone"] == "mad") & g["mixer"].map(own_conv) & ~g["mixer"].isin(ran)]
            g = pd.concat([g, same.assign(backbone="conv_mlp", repeated=True)])
        order = g["backbone"].map({b: i for i, b in enumerate(BACKBONE_ORDER)})
        out.append(g.assign(_o=order).sort_values(["_o", "mixer"], kind="stable"))
    cols = [*ABLATION_COLUMNS, "budget", "rates"]
    return pd.concat(out)[cols].reset_index(drop=True) if out else pd.DataFrame(columns=cols)


def ablation_table(long: pd.DataFrame) -> pd.DataFrame:
    """`backbone_ablation` as the page shows it: one row per mixer; per setting its accuracy in each
    backbone, its ESS in each, and the setting's no-recall baseline."""
    if long.empty:
        return pd.DataFrame(columns=["mixer"])
    out = pd.DataFrame(index=sorted(long["mixer"].unique()))
    for setting, g in long.groupby("setting", sort=False):
        short = setting.replace("L=64, ", "")
        for what, col in (("accuracy", "accuracy"), ("ESS", "ess")):
            for backbone in BACKBONE_ORDER:
                h = g[g["backbone"] == backbone]
                if not h.empty:
                    out[f"{short} {what}: {backbone}"] = h.set_index("mixer")[col]
        out[f"{short} no-recall"] = float(g["no_recall"].iloc[0])
    return out.reset_index(names="mixer")


def ladder(best: pd.DataFrame, task: str = "mqar") -> pd.DataFrame:
    """The task's settings from easiest to hardest (length, then memory demand) as columns, one row per
    mixer: its best test accuracy there (state size and rate chosen on validation; blank where not run),
    ranked on the settings every mixer has whole, and a last row with each setting's no-recall baseline."""
    g = best[best["task"] == task]
    if g.empty:
        return pd.DataFrame(columns=["mixer"])
    per = best_per_setting(g)
    order = per.sort_values(["seq_len", "memory_demand"])["setting"].drop_duplicates().tolist()
    table = per.pivot(index="mixer", columns="setting", values="accuracy")[order]
    shared = [s for s in order if s in set(g[shared_settings(g)]["setting"])]
    table = table.loc[table[shared if len(shared) else table.columns].mean(axis=1).sort_values(ascending=False).index]
    if "seeds" in per and (per["seeds"] >= MEDIAN_SEEDS).any():  # a median over seeds shows its range
        table = table.astype(object)
        for r in per[per["seeds"] >= MEDIAN_SEEDS].itertuples():
            table.loc[r.mixer, r.setting] = f"{r.accuracy:.3f} ({r.accuracy_low:.3f}-{r.accuracy_high:.3f})"
    base = per.drop_duplicates("setting").set_index("setting")["no_recall"][order]
    out = pd.concat([table, base.to_frame().T.rename(index={"no_recall": "no-recall baseline"})])
    return out.reset_index(names="mixer")


def _nearest_throughput(tp: pd.DataFrame, mixer: str, device: str, length: int, kernels: list[str]) -> float:
    """Forward tok/s of the mixer on the run's device, with the kernel the run used where that was
    measured (a mixer can have fast and reference rows), at the nearest measured length."""
    g = tp[(tp["mixer"] == mixer) & (tp["device"] == device)]
    if g["kernel"].isin(kernels).any():
        g = g[g["kernel"].isin(kernels)]
    if g.empty:
        return float("nan")
    return float(g.iloc[(g["L"] - length).abs().argmin()]["forward tok/s"])


def board(records: list[dict], tp: pd.DataFrame | None = None, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation), every column
    (`best`: `best_rows(run_rows(records))` where the caller has it already)."""
    tp = throughput_rows([]) if tp is None else tp
    if best is None:
        best = best_rows(run_rows(records), incomplete_groups(records))
    df = median_seed_rows(best)  # a design at 3 or more seeds: its median seed's row, with the range
    if not df.empty:
        df["learned"] = learned_flag(df)  # of the row shown (a median seed's)
        df["same_as"] = same_model(df)
    df["forward_tokens_per_s"] = [
        _nearest_throughput(tp, r.mixer, r.device, r.seq_len, r.kernels.split(",")) for r in df.itertuples()
    ]
    df["state_use"] = state_use(df)["state use"].values if not df.empty else []
    return df


# what ESS at each moment of training is compared on: the column and how the page names it
ESS_MOMENTS = (("ess_init", "at initialization"), ("ess_early", "early"), ("ess", "trained"), ("tss", "TSS (by design)"))
TIMING_COLUMNS = ["task", "measured", "step", "n", "settings", "mixers", "Spearman within settings", "low", "high", "holds"]


def ess_timing(df: pd.DataFrame, resamples: int | None = None) -> pd.DataFrame:
    """Predictive or descriptive: per task, Spearman(accuracy, ESS) within settings (the verdict's test)
    with ESS of the model as initialized, at its first ESS evaluation and trained, and TSS beside them,
    each over the same best rows (those that have all three), with its clustered interval."""
    kw = {} if resamples is None else {"resamples": resamples}
    out = []
    for task, g in df.groupby("task"):
        g = g.dropna(subset=[c for c, _ in ESS_MOMENTS])
        if g.empty:
            continue
        for column, name in ESS_MOMENTS:
            res = within_setting_coefficient(g, column, **kw)
            step = {"ess_init": 0, "ess_early": g["ess_early_step"].median()}.get(column, float("nan"))
            out.append({"task": task, "measured": name, "step": step, "n": res["n"], "settings": res["settings"],
                        "mixers": res["mixers"], "Spearman within settings": res["diff"], "low": res["low"],
                        "high": res["high"], "holds": "yes" if res["holds"] else "no"})  # fmt: skip
    return pd.DataFrame(out, columns=TIMING_COLUMNS)


# the ESS paper's test within a family: a mixer counts as a family when it has this many state sizes
# in at least FAMILY_SETTINGS settings of a task (benchmarks/conf/preset/state_family.yaml)
FAMILY_SIZES, FAMILY_SETTINGS = 4, 3
FAMILY_COLUMNS = ["task", "family", "sizes (TSS)", "settings", "n", "Spearman ESS/demand", "Spearman TSS/demand",
                  "Pearson ESS/demand", "Pearson TSS/demand", "CPU hours"]  # fmt: skip


def family_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The best rows of every mixer that is a family (FAMILY_SIZES state sizes in FAMILY_SETTINGS settings
    of a task), on those settings; the rest dropped."""
    keep = []
    for _, g in distinct(df).groupby(["task", "mixer"]):
        sizes = g.groupby("setting")["tss"].nunique()
        settings = sizes[sizes >= FAMILY_SIZES].index
        if len(settings) >= FAMILY_SETTINGS:
            keep.append(g[g["setting"].isin(settings)])
    return pd.concat(keep, ignore_index=True) if keep else df.iloc[0:0]


def state_family(df: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The ESS paper's test as it ran it: within each family (a mixer over its state sizes), accuracy
    against ESS/demand and TSS/demand over its sizes and settings pooled, Spearman and Pearson; then all
    families pooled. CPU hours: every run of those groups (every rate tried), from the records."""
    fam = family_rows(df)
    out = []
    for task, t in fam.groupby("task"):
        parts = [(mixer, g) for mixer, g in t.groupby("mixer")] + ([("all families", t)] if t["mixer"].nunique() > 1 else [])
        for name, g in parts:
            hours = runs.loc[runs["group"].isin(g["group"]), "run_seconds"].sum() / 3600
            sizes = ", ".join(f"{v:g}" for v in sorted(g["tss"].unique()))
            out.append({"task": task, "family": name, "sizes (TSS)": sizes, "settings": g["setting"].nunique(),
                        **_coefficients(g), "CPU hours": hours})  # fmt: skip
    return pd.DataFrame(out, columns=FAMILY_COLUMNS)


COST_TOTAL = "all"  # protocol_cost's row that sums a task's groups


def protocol_cost(runs: pd.DataFrame, by: str = "mixer") -> pd.DataFrame:
    """What the converged protocol costs, per task and mixer (or setting, `by="setting"`, shortest and
    least demanding first) and in all (`COST_TOTAL`): groups, runs (every rate the search trained) and CPU hours (each
    run's own seconds, one thread per run), from the records."""
    cols = ["task", by, "groups", "runs", "CPU hours", "hours per group"]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for task, t in runs.groupby("task"):
        if by == "setting":
            t = t.sort_values(["seq_len", "memory_demand"], kind="stable")
        for name, g in [*t.groupby(by, sort=by != "setting"), (COST_TOTAL, t)]:
            hours = g["run_seconds"].sum() / 3600
            out.append({"task": task, by: name, "groups": g["group"].nunique(), "runs": len(g), "CPU hours": hours,
                        "hours per group": hours / g["group"].nunique()})  # fmt: skip
    return pd.DataFrame(out, columns=cols)


CONVERGENCE_COLUMNS = ["task", "groups", "solved or plateau", "rate inside the grid or solved", "attention's lowest accuracy"]


def convergence(df: pd.DataFrame, runs: pd.DataFrame, searched: set[str]) -> pd.DataFrame:
    """Per task, over the groups trained by successive halving (`searched`): how many ended solved or on
    a plateau (the best row did; or it was pruned, edging out on validation the run the search trained
    furthest, and that run did), in how many groups the chosen rate lies strictly inside the rates the
    search tried or some run of the group solved the task, and attention's lowest best accuracy."""
    out = []
    best = df[df["group"].isin(searched)]
    done = ["solved", "plateau"]
    for task, g in best.groupby("task"):
        tried = runs[runs["group"].isin(g["group"])]
        furthest = tried.sort_values("steps").groupby("group")["ended"].last()
        tried = tried.groupby("group")
        lo, hi, solved = tried["lr"].min(), tried["lr"].max(), tried["stopped"].agg(lambda v: (v == "solved").any())
        inside = [(lo[r.group] < r.lr < hi[r.group]) or bool(solved[r.group]) for r in g.itertuples()]
        ended = [r.ended in done or (r.ended == "pruned" and furthest[r.group] in done) for r in g.itertuples()]
        attention = g.loc[g["mixer"] == "attention", "accuracy"]
        out.append({"task": task, "groups": len(g), "solved or plateau": int(sum(ended)),
                    "rate inside the grid or solved": int(sum(inside)),
                    "attention's lowest accuracy": attention.min() if len(attention) else float("nan")})  # fmt: skip
    return pd.DataFrame(out, columns=CONVERGENCE_COLUMNS)


CHANGE_KEYS = ["task", "mixer", "state", "setting", "backbone"]


def protocol_change(now: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
    """The same model (mixer, state size, setting, backbone; first seed) under the converged protocol
    (`now`) and the step-capped one before it (`before`, the store it moved to): accuracy, why it ended
    and the sequences it saw, each side."""
    cols = ["mixer", "state", "setting", "accuracy before", "ended before", "sequences before", "accuracy now",
            "ended now", "sequences now"]  # fmt: skip
    if now.empty or before.empty:
        return pd.DataFrame(columns=cols)
    pick = ["accuracy", "ended", "sequences", "seq_len", "memory_demand"]
    a, b = (first_seed(d).set_index(CHANGE_KEYS)[pick] for d in (now, before))
    both = a.join(b, lsuffix=" now", rsuffix=" before", how="inner").reset_index()
    both = both.sort_values(["task", "seq_len now", "memory_demand now", "mixer", "state"])
    return both[cols].reset_index(drop=True)
