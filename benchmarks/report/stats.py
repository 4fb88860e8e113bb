"""Statistics on rows: the best run of a sweep, the settings every mixer has whole, the thresholds every
later stage names (one learned margin), seed medians, the pairs that are one model, the clustered
bootstrap behind every interval with leave-one-mixer-out, and the coefficients. Rows in, rows or
numbers out."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The one "learned" margin: a row learned recall when its test accuracy is above its no-recall
# baseline by more than this. Every flag, table and sentence uses it (docs/leaderboard.md says why 0.05).
LEARNED_MARGIN = 0.05
RECALL_MARGIN = LEARNED_MARGIN  # the same margin, under the name older callers import
# A change of accuracy worth naming (between models, between seeds).
ACCURACY_SHIFT = 0.1
LEARNED_LITTLE = LEARNED_MARGIN  # never learned: within the margin on every setting
# A row below its no-recall baseline: its test accuracy under the baseline by more than this many standard
# errors of an accuracy over its test sequences (99%, two-sided; the queries of one sequence share one
# model state, so the sequences, not the queries, are the independent draws). Such a model does worse
# than a guess among the values its context holds: it cannot see them, or has not learned to pick among
# them.
BELOW_BASELINE_Z = 2.58
# the `learned` column's values
LEARNED, NOT_LEARNED, BELOW_BASELINE = "yes", "not learned", "below baseline"

# State use, per best row, with the headline ESS against the largest value it can take: the bound,
# the window's mean of min(TSS, i, L - i) (a block T[i:, :i] has rank at most min(i, L - i), so
# attention's ESS can never approach TSS = L; ESS/TSS alone would make it "unsaturated" by
# construction). The thresholds are this suite's choice; the ESS paper describes both without numbers.
SATURATION = 0.9  # saturated: ESS >= 0.9 bound, the state is used up to what it can hold
COLLAPSE = 0.5  # collapsed: ESS < memory demand <= bound and ESS < 0.5 bound: room to hold what the
#                 task needs, but the trained operator uses under half of it and less than the task needs
SOLVED = 0.9  # an accuracy at or above this solves the task (a collapsed row, a ladder rung)

# What a converged sweep owes its readers (issue 34's acceptance): this share of its best MQAR rows ended
# solved or on a plateau, this share of its groups chose a rate inside the rates tried (or solved the
# task), and attention, which solves MQAR at every setting, at or above this accuracy everywhere.
CONVERGED_SHARE = 0.8
INSIDE_GRID_SHARE = 0.9
ATTENTION_FLOOR = 0.99
# and the aim for its cost: the whole published MQAR sweep (both lengths, the ladder, the seeds) in at most
# this many CPU-hours
MQAR_CPU_HOURS_AIM = 40


def best_of_sweep(runs: pd.DataFrame, by) -> pd.DataFrame:
    """The best run of each sweep: per `by` (a group: its learning rates; a mixer's setting: its state
    sizes and rates) the row with the highest validation accuracy, then the lowest validation loss,
    then the lowest learning rate where the rows have one. Chosen on validation, never on test, so
    the test accuracy reported is not selected on. Rows keep the order of their ranking."""
    keys, ascending = ["val_accuracy", "val_loss"], [False, True]
    if "lr" in runs:
        keys, ascending = [*keys, "lr"], [*ascending, True]
    return runs.sort_values(keys, ascending=ascending).groupby(by, sort=False).head(1)


def shared_settings(rows: pd.DataFrame) -> pd.Series:
    """Which rows sit on a setting (task and setting) that every mixer in `rows` has whole: every state
    size it has on any of the rows' settings landed there too (where rows name a `state`). Mixers are
    ranked on these while a sweep is partial, so that none is ranked on a setting where only some of
    its sizes have landed (its best over its sizes there could still rise)."""
    whole = pd.Series(True, index=rows.index)
    if "state" in rows:
        sizes = rows["mixer"].map(rows.groupby("mixer")["state"].nunique())
        whole = rows.groupby(["task", "setting", "mixer"])["state"].transform("nunique") == sizes
    mixers_whole = rows["mixer"].where(whole)  # NaN, so not counted, where a mixer's sizes are missing
    by_setting = mixers_whole.groupby([rows["task"], rows["setting"]])
    return by_setting.transform("nunique") == rows["mixer"].nunique()


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


def below_baseline(df: pd.DataFrame) -> pd.Series:
    """Whether each row's accuracy is below its no-recall baseline by more than BELOW_BASELINE_Z standard
    errors over its test sequences; False where the row does not say how many it was tested on."""
    error = np.sqrt(df["no_recall"] * (1 - df["no_recall"]) / df.get("test_sequences", np.nan))
    return df["accuracy"] < df["no_recall"] - BELOW_BASELINE_Z * error


def learned_flag(df: pd.DataFrame) -> np.ndarray:
    """The `learned` column: LEARNED (`learned`), BELOW_BASELINE (`below_baseline`) or NOT_LEARNED."""
    return np.select([learned(df), below_baseline(df)], [LEARNED, BELOW_BASELINE], NOT_LEARNED)


def best_rows(runs: pd.DataFrame, held_back: list[str] = ()) -> pd.DataFrame:
    """The leaderboard: one row per group (its best learning rate on validation), with `learned` (LEARNED,
    NOT_LEARNED or BELOW_BASELINE); the groups in `held_back` (`rows.incomplete_groups`) left out."""
    df = select_best(runs[~runs["group"].isin(list(held_back))])
    df["learned"] = learned_flag(df)
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
    return df[_is_lowest_seed(df)].reset_index(drop=True)


def _is_lowest_seed(df: pd.DataFrame) -> pd.Series:
    return df["seed"] == df.groupby("design")["seed"].transform("min")


# Two mixers that are one model at a setting: (mixer, the mixer it equals when its state knob reaches
# the sequence length). A sliding window of at least L tokens sees every past token: attention.
SAME_MODEL = (("sliding_window", "attention"),)


def same_model(df: pd.DataFrame) -> pd.Series:
    """Per row, the mixer it is the same model as at its setting (`SAME_MODEL`) where that mixer was run
    there too, else "": such a row repeats its twin's model and counts once in every statistic."""
    out = pd.Series("", index=df.index, dtype=object)
    if df.empty or "state_value" not in df or "seq_len" not in df:
        return out
    for mixer, twin in SAME_MODEL:
        rows = df[df["mixer"] == mixer]
        size = rows["state_value"]
        there = df[df["mixer"] == twin].groupby("task")["setting"].agg(set)
        ran = [r.setting in there.get(r.task, set()) for r in rows.itertuples()]
        out[rows.index[(size >= rows["seq_len"]).to_numpy() & np.array(ran, dtype=bool)]] = twin
    return out


def distinct(df: pd.DataFrame) -> pd.DataFrame:
    """The rows every statistic counts: without those that repeat another mixer's model (`same_model`)."""
    if "same_as" not in df:
        return df
    return df[df["same_as"].fillna("") == ""]


# Where a design was trained at this many seeds or more, its row is its median seed's, with the range.
MEDIAN_SEEDS = 3


def median_seed_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per design: its lowest seed's row, and where it has MEDIAN_SEEDS or more seeds the row of
    its median seed by test accuracy (with an even count the lower middle one), with `seeds` (how many)
    and `accuracy_low`/`accuracy_high` (the range). A whole run's row, not medians taken column by
    column: accuracy, ESS, validation accuracy and why it ended all belong to one trained model, so a
    correlation never pairs one seed's accuracy with another's ESS. A design with fewer seeds keeps its
    lowest (`first_seed`): two draws have no middle."""
    if df.empty:
        return df.assign(seeds=pd.Series(dtype=int), accuracy_low=pd.Series(dtype=float), accuracy_high=pd.Series(dtype=float))
    by = df.groupby("design")
    seeds = by["seed"].transform("nunique")
    rank = df.sort_values(["accuracy", "seed"], kind="stable").groupby("design").cumcount().reindex(df.index)
    out = df[(rank == (seeds - 1) // 2).where(seeds >= MEDIAN_SEEDS, _is_lowest_seed(df))].copy()
    out["seeds"] = seeds.loc[out.index].astype(int)
    out["accuracy_low"] = by["accuracy"].transform("min").loc[out.index]
    out["accuracy_high"] = by["accuracy"].transform("max").loc[out.index]
    out.loc[out["seeds"] < MEDIAN_SEEDS, ["accuracy_low", "accuracy_high"]] = np.nan
    return out.reset_index(drop=True)


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


# The clustered bootstrap behind every interval on the page: rows come in clusters (a mixer's rows,
# over its state sizes and settings, share its architecture; a design's seeds share everything else),
# so resampling rows as if independent makes intervals too narrow.
CONFIDENCE = 0.95
RESAMPLES = 999
# A bound this close to zero (a share of the interval's width) is within the Monte Carlo noise of 999
# draws (its spread over bootstrap seeds is about 2% of the width): it is drawn again with REDRAW times the
# resamples, so that no verdict turns on the bootstrap's seed.
NEAR_ZERO = 0.05
REDRAW = 10
INTERVAL_METHOD = (
    f"Intervals: {CONFIDENCE:.0%} percentile intervals from a clustered bootstrap ({RESAMPLES:,} resamples; "
    f"{RESAMPLES * REDRAW:,} where a bound lies within {NEAR_ZERO:.0%} of the interval's width of zero, so "
    "that no verdict turns on the bootstrap's seed): whole mixers are drawn with replacement, every row of a "
    "drawn mixer kept (and where a design has several seeds, its seeds drawn within it), so that a mixer's "
    "rows never count as independent observations. A verdict holds only when that interval excludes zero "
    "and leaving out any one mixer keeps the sign."
)


def _units(frame: pd.DataFrame, cluster: str, within: str | None) -> list[list[list[np.ndarray]]]:
    """Row positions of `frame` per cluster, per design within it, per seed within that (where `within`
    is a column): what one bootstrap draw of a cluster resamples."""
    pos = pd.Series(np.arange(len(frame)), index=frame.index)
    out = []
    for _, c in frame.groupby(cluster, sort=True):
        if within is None or within not in frame:
            out.append([[pos[c.index].to_numpy()]])
            continue
        designs = c.groupby("design", sort=True) if "design" in c else [(None, c)]
        out.append([[pos[s.index].to_numpy() for _, s in d.groupby(within, sort=True)] for _, d in designs])
    return out


def cluster_bootstrap(
    frame: pd.DataFrame,
    statistic,
    cluster: str = "mixer",
    within: str | None = "seed",
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `statistic` (row positions of `frame` -> float) under a two-stage
    bootstrap: clusters (`cluster`'s values) drawn with replacement by scipy.stats.bootstrap, and within
    a drawn cluster each design's seeds (`within`) drawn with replacement where it has several; drawn
    again with `REDRAW` times the resamples where a bound lies within `NEAR_ZERO` of the interval's
    width of zero. NaN with fewer than two clusters."""
    from scipy import stats

    units = _units(frame, cluster, within)
    if len(units) < 2 or resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)

    def rows(drawn) -> np.ndarray:
        parts = []
        for c in np.asarray(drawn, dtype=int):
            for seeds in units[c]:
                picks = rng.integers(0, len(seeds), len(seeds)) if len(seeds) > 1 else [0]
                parts += [seeds[p] for p in picks]
        return np.concatenate(parts)

    def interval(n: int) -> tuple[float, float]:
        res = stats.bootstrap(
            (np.arange(len(units)),), lambda drawn: statistic(rows(drawn)), vectorized=False, n_resamples=n,
            confidence_level=confidence, method="percentile", random_state=seed,
        )  # fmt: skip
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    low, high = interval(resamples)
    if min(abs(low), abs(high)) < NEAR_ZERO * (high - low):  # the sign of a bound is Monte Carlo noise
        rng = np.random.default_rng(seed)  # the seed draws start over: as a call with that many resamples
        low, high = interval(resamples * REDRAW)
    return low, high


def leave_one_out(frame: pd.DataFrame, statistic, cluster: str = "mixer") -> dict:
    """`statistic` with each cluster's rows left out in turn: cluster -> value."""
    keys = frame[cluster].to_numpy()
    return {c: float(statistic(np.flatnonzero(keys != c))) for c in sorted(set(keys))}


def assess(frame: pd.DataFrame, statistic, cluster: str = "mixer", resamples: int = RESAMPLES, **kw) -> dict:
    """A signed statistic with its clustered interval (`cluster_bootstrap`) and leave-one-cluster-out
    values: `holds` when the interval lies above zero and no single cluster's removal flips the sign;
    `flips`: the clusters whose removal does."""
    estimate = float(statistic(np.arange(len(frame)))) if len(frame) else float("nan")
    if resamples < 1:
        return {"diff": estimate, "low": float("nan"), "high": float("nan"), "loo": {}, "flips": [], "holds": False}
    low, high = cluster_bootstrap(frame, statistic, cluster, resamples=resamples, **kw)
    loo = leave_one_out(frame, statistic, cluster) if frame[cluster].nunique() > 1 else {}
    flips = [c for c, v in loo.items() if not np.isnan(v) and np.sign(v) != np.sign(estimate)]
    return {"diff": estimate, "low": low, "high": high, "loo": loo, "flips": flips, "holds": bool(low > 0 and not flips)}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(_rowwise_spearman(x[None], y[None])[0])


def _within_setting_statistic(part: pd.DataFrame):
    """Row positions -> the rows-weighted mean over settings (3 or more rows) of Spearman(accuracy, ESS)
    minus Spearman(accuracy, TSS); a coefficient without spread counts 0."""
    acc, ess, tss = (part[c].to_numpy(float) for c in ("accuracy", "ess", "tss"))
    codes = pd.factorize(part["setting"])[0]

    def statistic(idx: np.ndarray) -> float:
        num, total = 0.0, 0
        for s in np.unique(codes[idx]):
            sel = idx[codes[idx] == s]
            if len(sel) < 3:
                continue
            num += len(sel) * (np.nan_to_num(_spearman(ess[sel], acc[sel])) - np.nan_to_num(_spearman(tss[sel], acc[sel])))
            total += len(sel)
        return num / total if total else float("nan")

    return statistic


def stratified_advantage(part: pd.DataFrame, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """ESS against TSS within settings: per setting with 3 or more best rows, Spearman(accuracy, ESS)
    and Spearman(accuracy, TSS); their means over settings weighted by rows; the weighted mean of
    ESS's minus TSS's (`diff`, signed, as the paper's claim is directional: a coefficient without spread
    counts 0); its clustered interval (`low`, `high`: whole mixers resampled), the value with each
    mixer left out (`loo`), the mixers whose removal flips its sign (`flips`) and whether it `holds`.
    `resamples=0`: the point estimates only."""
    part = distinct(part)
    groups = [g for _, g in part.groupby("setting", sort=True) if len(g) >= 3]
    out = {"settings": len(groups), "n": sum(len(g) for g in groups)}
    if not groups:
        nan = float("nan")
        return {**out, "ess": nan, "tss": nan, "diff": nan, "low": nan, "high": nan, "loo": {}, "flips": [], "holds": False}
    weights = np.array([len(g) for g in groups], dtype=float)
    coef = np.array([[_spearman(g[c].to_numpy(float), g["accuracy"].to_numpy(float)) for c in ("ess", "tss")] for g in groups])
    mean = [float(np.average(coef[~np.isnan(coef[:, k]), k], weights=weights[~np.isnan(coef[:, k])]))
            if (~np.isnan(coef[:, k])).any() else float("nan") for k in (0, 1)]  # fmt: skip
    rows = pd.concat(groups).reset_index(drop=True)
    res = assess(rows, _within_setting_statistic(rows), confidence=confidence, resamples=resamples, seed=seed)
    return {**out, "ess": mean[0], "tss": mean[1], **res}


def _pooled_statistic(part: pd.DataFrame):
    """Row positions -> Spearman(accuracy, ESS/demand) minus Spearman(accuracy, TSS/demand), signed
    (a negative correlation is no support); NaN under 4 rows."""
    demand = part["memory_demand"].clip(lower=1).to_numpy(float)
    ess, tss, acc = part["ess"].to_numpy(float) / demand, part["tss"].to_numpy(float) / demand, part["accuracy"].to_numpy(float)

    def statistic(idx: np.ndarray) -> float:
        if len(idx) < 4:
            return float("nan")
        return float(np.nan_to_num(_spearman(ess[idx], acc[idx])) - np.nan_to_num(_spearman(tss[idx], acc[idx])))

    return statistic


def pooled_advantage(part: pd.DataFrame, confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> dict:
    """The pooled comparison (ESS/demand against TSS/demand over all settings) with `assess`'s clustered
    interval, leave-one-mixer-out and call."""
    part = distinct(part)
    if len(part) < 4:
        nan = float("nan")
        return {"diff": nan, "low": nan, "high": nan, "loo": {}, "flips": [], "holds": False}
    part = part.reset_index(drop=True)
    return assess(part, _pooled_statistic(part), confidence=confidence, resamples=resamples)


def advantage_interval(part: pd.DataFrame, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """`pooled_advantage`'s clustered interval."""
    res = pooled_advantage(part, confidence)
    return res["low"], res["high"]


def _demand_alone(part: pd.DataFrame) -> float:
    """Spearman(accuracy, 1/demand) over the rows: what pooling settings gives any state measure / demand."""
    from scipy import stats

    part = distinct(part)
    x, y = 1 / part["memory_demand"].clip(lower=1), part["accuracy"]
    if len(part) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(x, y)[0])


def _within_setting_coefficient(part: pd.DataFrame, column: str):
    """Row positions -> the rows-weighted mean over settings (3 or more rows) of Spearman(accuracy,
    `column`); a setting without spread counts 0."""
    acc, x = part["accuracy"].to_numpy(float), part[column].to_numpy(float)
    codes = pd.factorize(part["setting"])[0]

    def statistic(idx: np.ndarray) -> float:
        num, total = 0.0, 0
        for s in np.unique(codes[idx]):
            sel = idx[codes[idx] == s]
            if len(sel) >= 3:
                num, total = num + len(sel) * np.nan_to_num(_spearman(x[sel], acc[sel])), total + len(sel)
        return num / total if total else float("nan")

    return statistic


def within_setting_coefficient(part: pd.DataFrame, column: str, resamples: int = RESAMPLES) -> dict:
    """Spearman(accuracy, `column`) within settings (weighted by rows, as the verdict's test), over the
    distinct rows that have `column`, with `assess`'s clustered interval and leave-one-mixer-out: `holds`
    when the interval lies above zero and no mixer's removal flips its sign."""
    part = distinct(part).dropna(subset=[column])
    part = part[part.groupby("setting")["setting"].transform("size") >= 3].reset_index(drop=True)
    out = {"n": len(part), "settings": part["setting"].nunique(), "mixers": part["mixer"].nunique()}
    if part.empty:
        nan = float("nan")
        return {**out, "diff": nan, "low": nan, "high": nan, "loo": {}, "flips": [], "holds": False}
    return {**out, **assess(part, _within_setting_coefficient(part, column), resamples=resamples)}
