"""Statistics on rows: the best run of a sweep, the settings every mixer has, the thresholds every
later stage names, the within-setting bootstrap and the coefficients. Rows in, rows or numbers out."""

from __future__ import annotations

import numpy as np
import pandas as pd

# A row within this much of its no-recall baseline (or below it) has not learned recall.
LEARNED_MARGIN = 0.01
# Above the baseline by this much: learned clearly (the ablation's, the ladder's and the change's test).
RECALL_MARGIN = 0.2
# A change of accuracy worth naming (between models, between seeds).
ACCURACY_SHIFT = 0.1
# A best accuracy this close to the baseline on every setting: nothing worth reading.
LEARNED_LITTLE = 0.05

# State use, per best row, with the headline ESS against the largest value it can take: the bound,
# the window's mean of min(TSS, i, L - i) (a block T[i:, :i] has rank at most min(i, L - i), so
# attention's ESS can never approach TSS = L; ESS/TSS alone would make it "unsaturated" by
# construction). The thresholds are this suite's choice; the ESS paper describes both without numbers.
SATURATION = 0.9  # saturated: ESS >= 0.9 bound, the state is used up to what it can hold
COLLAPSE = 0.5  # collapsed: ESS < memory demand <= bound and ESS < 0.5 bound: room to hold what the
#                 task needs, but the trained operator uses under half of it and less than the task needs
SOLVED = 0.9  # an accuracy at or above this solves the task (a collapsed row, a ladder rung)


def best_of_sweep(runs: pd.DataFrame, by) -> pd.DataFrame:
    """The best run of each sweep: per `by` (a group: its learning rates; a mixer's setting: its state
    sizes and rates) the row with the highest validation accuracy, then the lowest validation loss,
    then the lowest learning rate where the rows have one. Chosen on validation, never on test, so
    the test accuracy reported is not selected on. Rows keep the order of their ranking."""
    keys, ascending = ["val_accuracy", "val_loss"], [False, True]
    if "lr" in runs:
        keys, ascending = [*keys, "lr"], [*ascending, True]
    return runs.sort_values(keys, ascending=ascending).groupby(by, sort=False).head(1)


def shared_settings(per: pd.DataFrame) -> pd.Series:
    """Which rows sit on a setting (task and setting) that every mixer in `per` has: where mixers are
    ranked against each other while a sweep is partial."""
    return per.groupby(["task", "setting"])["mixer"].transform("nunique") == per["mixer"].nunique()


def best_per_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Per mixer, task and setting the best row on validation (its state size chosen as its rate was)."""
    return best_of_sweep(df, ["mixer", "task", "setting"])


def select_best(runs: pd.DataFrame) -> pd.DataFrame:
    """Each group's best run (`best_of_sweep`), with the grid it was chosen from and the spread of test
    accuracy over that grid; groups in sorted order."""
    if runs.empty:
        return runs.assign(lr_grid=pd.Series(dtype=str), grid_spread=pd.Series(dtype=str))
    best = best_of_sweep(runs.sort_values("group", kind="stable"), "group").sort_values("group", kind="stable")
    best = best.set_index("group")
    by_group = runs.groupby("group")
    best["lr_grid"] = by_group["lr"].agg(lambda v: ",".join(f"{x:.2g}" for x in sorted(v)))
    best["grid_spread"] = by_group["accuracy"].agg(lambda v: f"{v.min():.2f}-{v.max():.2f}" if len(v) > 1 else "")
    return best.reset_index()


def learned(df: pd.DataFrame, margin: float = LEARNED_MARGIN) -> pd.Series:
    """Whether each row's accuracy is above its no-recall baseline by more than `margin`."""
    return df["accuracy"] > df["no_recall"] + margin


def best_rows(runs: pd.DataFrame, held_back: list[str] = ()) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation), with `learned`;
    the groups in `held_back` (`rows.incomplete_groups`) left out."""
    df = select_best(runs[~runs["group"].isin(list(held_back))])
    df["learned"] = np.where(learned(df), "yes", "not learned")
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


def _demand_alone(part: pd.DataFrame) -> float:
    """Spearman(accuracy, 1/demand) over the rows: what pooling settings gives any state measure / demand."""
    from scipy import stats

    x, y = 1 / part["memory_demand"].clip(lower=1), part["accuracy"]
    if len(part) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(x, y)[0])
