"""The page's intervals on synthetic rows whose cluster structure is known (`benchmarks.report.stats`)."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.report import stats


def _copies(clusters=8, copies=20, seed=0):
    """Each cluster one draw, copied `copies` times: the rows carry `clusters` observations, not more."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=clusters)
    return pd.DataFrame({"mixer": np.repeat([f"m{c}" for c in range(clusters)], copies), "y": np.repeat(y, copies)})


def _mean(frame):
    y = frame["y"].to_numpy()
    return lambda idx: float(y[idx].mean())


def test_resampling_clusters_widens_the_interval_over_copied_rows():
    df = _copies()
    rows = stats.cluster_bootstrap(df.assign(row=np.arange(len(df))), _mean(df), cluster="row", within=None)
    clustered = stats.cluster_bootstrap(df, _mean(df), cluster="mixer", within=None)
    row_width, cluster_width = rows[1] - rows[0], clustered[1] - clustered[0]
    # 160 rows as if independent: sd / sqrt(160); 8 clusters: sd / sqrt(8), ~4.5 times wider
    assert cluster_width > 3 * row_width, (rows, clustered)
    mean = df["y"].mean()
    assert clustered[0] < mean < clustered[1]


def test_seeds_within_a_cluster_are_resampled_where_a_design_has_several():
    """Rows identical across mixers but for the seed: only the seed draw can move the statistic."""
    df = pd.DataFrame({"mixer": np.repeat(["a", "b"], 3), "design": np.repeat(["a0", "b0"], 3), "seed": [0, 1, 2] * 2,
                       "y": [0.0, 1.0, 2.0] * 2})  # fmt: skip
    low, high = stats.cluster_bootstrap(df, _mean(df), within="seed", resamples=199)
    assert low < 1.0 < high
    assert stats.cluster_bootstrap(df, _mean(df), within=None, resamples=199) == (1.0, 1.0)  # mixers alike


def test_one_cluster_carrying_the_effect_is_named_and_the_verdict_does_not_hold():
    """Five mixers near zero and one far above: the mean is positive, and without that one it is not."""
    df = pd.DataFrame({"mixer": list("abcdef"), "y": [-0.1, -0.2, 0.05, -0.1, -0.05, 3.0]})
    res = stats.assess(df, _mean(df))
    assert res["diff"] > 0 and res["flips"] == ["f"] and not res["holds"]
    assert res["loo"]["f"] < 0 and all(v > 0 for k, v in res["loo"].items() if k != "f")
    # a verdict whose interval excludes zero still does not hold when one mixer's removal flips it
    many = pd.DataFrame({"mixer": list("abcdefghij"), "y": [0.5, 0.6, 0.55, 0.45, 0.5, 0.6, 0.4, 0.5, 0.55, 0.5]})
    res = stats.assess(many, _mean(many))
    assert res["low"] > 0 and res["holds"] and not res["flips"]


def test_an_interval_above_zero_does_not_hold_when_one_mixers_removal_flips_the_sign(monkeypatch):
    """The rule itself, apart from how wide the interval comes out: leave-one-out alone can refuse it."""
    df = pd.DataFrame({"mixer": list("abcdef"), "y": [-0.1, -0.2, 0.05, -0.1, -0.05, 3.0]})
    monkeypatch.setattr(stats, "cluster_bootstrap", lambda *a, **k: (0.1, 0.9))
    res = stats.assess(df, _mean(df))
    assert res["low"] > 0 and res["flips"] == ["f"] and not res["holds"]
    monkeypatch.setattr(stats, "cluster_bootstrap", lambda *a, **k: (0.1, 0.9))
    assert stats.assess(df[df["mixer"] != "c"].reset_index(drop=True), _mean(df[df["mixer"] != "c"]))["flips"] == ["f"]


def test_the_verdicts_statistics_are_their_point_estimates_and_clustered():
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"mixer": rng.choice(list("abcdef"), n), "setting": rng.choice(["s1", "s2", "s3"], n),
                       "ess": rng.uniform(1, 64, n), "tss": rng.choice([8.0, 16.0, 32.0], n), "memory_demand": 8})  # fmt: skip
    df["accuracy"] = df["ess"] / 64
    strat = stats.stratified_advantage(df)
    assert strat["holds"] and strat["low"] > 0 and set(strat["loo"]) == set("abcdef")
    assert stats.stratified_advantage(df, resamples=0)["diff"] == strat["diff"]
    pooled = stats.pooled_advantage(df)
    assert pooled["holds"] and stats.advantage_interval(df) == (pooled["low"], pooled["high"])


def _best(rows):
    return pd.DataFrame(rows, columns=["task", "setting", "seq_len", "mixer", "state", "design", "seed", "accuracy", "ess"])


def _window_rows(runs):
    """The rows of records of (mixer, window, sequence length, accuracy), the window a size, "default"
    (the knob left at None) or None (not in the config): the state knob's value is read from each
    record's config, as the page reads it."""
    import copy

    from record_factory import CONFIG, valid_record

    from benchmarks.report.rows import run_rows

    records = []
    for mixer, window, seq_len, accuracy in runs:
        cfg = copy.deepcopy(CONFIG)
        size = {} if window is None else {"window_size": None if window == "default" else window}
        cfg["architecture"] = {"name": mixer, **size}
        cfg["task"]["seq_len"] = seq_len
        record = valid_record(cfg, accuracy=accuracy)
        record["metrics"]["task"]["seq_len"] = seq_len
        records.append(record)
    return run_rows(records)


def test_a_sliding_window_as_long_as_the_sequence_is_attention_and_counts_once():
    df = _window_rows([("attention", None, 32, 0.9), ("sliding_window", 32, 32, 0.9), ("sliding_window", 8, 32, 0.5),
                       ("sliding_window", 32, 64, 0.7), ("attention", None, 64, 0.95)])  # fmt: skip
    assert df["state_value"].tolist()[1:4] == [32.0, 8.0, 32.0]
    same = stats.same_model(df)
    assert list(same) == ["", "attention", "", "", ""]  # window 32 < L 64: a different model there
    kept = stats.distinct(df.assign(same_as=same))
    assert len(kept) == 4 and not ((kept["seq_len"] == 32) & (kept["state"] == "window_size=32")).any()
    from benchmarks.report.findings import duplicate_lines

    (line,) = duplicate_lines(df.assign(same_as=same))
    assert "sliding_window (window_size=32) at L=32" in line and "is attention" in line and "counts once" in line


def test_a_window_at_the_mixers_default_size_is_never_taken_for_attention():
    """A record that leaves the window at its default has no number to compare with L: not a twin."""
    df = _window_rows([("attention", None, 32, 0.9), ("sliding_window", "default", 32, 0.9), ("sliding_window", None, 32, 0.8)])
    assert df["state"].tolist()[1:] == ["window_size=default", ""] and df["state_value"].isna().tolist()[1:] == [True, True]
    assert list(stats.same_model(df)) == ["", "", ""]


def test_three_seeds_show_their_median_seeds_row_and_range_two_their_lowest_seed():
    # the median seed by accuracy (seed 2) has neither the median ESS (5.0, seed 0's) nor the lowest val
    # accuracy: its row is one model's, every column from seed 2
    mamba2 = [("mqar", "kv=8", 64, "mamba2", "", "m", s, a, e) for s, a, e in ((0, 0.244, 5.0), (1, 0.942, 6.0), (2, 0.808, 3.0))]
    df = _best(mamba2 + [("mqar", "kv=8", 64, "gla", "", "g", s, a, 2.0) for s, a in ((0, 0.5), (1, 0.9))])
    df["val_accuracy"] = df["accuracy"] + 0.01
    out = stats.median_seed_rows(df).set_index("mixer")
    assert out.loc["mamba2", "accuracy"] == 0.808 and out.loc["mamba2", "ess"] == 3.0 and out.loc["mamba2", "seed"] == 2
    assert out.loc["mamba2", "val_accuracy"] == pytest.approx(0.818) and out.loc["mamba2", "seeds"] == 3
    assert (out.loc["mamba2", "accuracy_low"], out.loc["mamba2", "accuracy_high"]) == (0.244, 0.942)
    assert out.loc["gla", "accuracy"] == 0.5 and out.loc["gla", "seed"] == 0 and np.isnan(out.loc["gla", "accuracy_low"])
    assert list(out.index) == ["mamba2", "gla"]  # one row per design, in the order they came
    four = _best([("mqar", "kv=8", 64, "lru", "", "l", s, a, 1.0) for s, a in ((0, 0.4), (1, 0.1), (2, 0.3), (3, 0.2))])
    assert stats.median_seed_rows(four)["seed"].tolist() == [3]  # 0.1, 0.2, 0.3, 0.4: the lower middle, 0.2 (seed 3)


def _timed_rows(init_follows_final: bool, seed: int = 0) -> pd.DataFrame:
    """Best rows of 8 mixers x 3 settings whose accuracy follows their trained ESS; ESS at init and early
    either follow it too (predictive) or are noise (descriptive)."""
    rng = np.random.default_rng(seed)
    mixers, settings = [f"m{i}" for i in range(8)], ["s1", "s2", "s3"]
    df = pd.DataFrame([(m, s) for m in mixers for s in settings], columns=["mixer", "setting"])
    n = len(df)
    df = df.assign(task="mqar", memory_demand=8, tss=16.0, ess=rng.uniform(1, 16, n), ess_early_step=200)
    df["accuracy"] = df["ess"] / 16
    df["ess_init"] = df["ess"] * 0.5 if init_follows_final else rng.uniform(1, 16, n)
    df["ess_early"] = df["ess"] * 0.8 if init_follows_final else rng.uniform(1, 16, n)
    return df


def test_ess_timing_says_descriptive_when_only_the_trained_ess_orders_accuracy():
    from benchmarks.report import findings, tables

    timing = tables.ess_timing(_timed_rows(False), resamples=199).set_index("measured")
    assert timing.loc["trained", "holds"] == "yes" and timing.loc["at initialization", "holds"] == "no"
    assert timing.loc["at initialization", "step"] == 0 and timing.loc["early", "step"] == 200
    (line,) = findings.ess_timing_lines(timing.reset_index())
    assert "describes" in line and "predicts" not in line.split("So ")[1].split(":")[0]
    (line,) = findings.ess_timing_lines(tables.ess_timing(_timed_rows(True), resamples=199))
    assert "ESS predicts" in line
    # records from before ESS at init was measured: no row, no claim
    assert tables.ess_timing(_timed_rows(False).assign(ess_init=np.nan), resamples=0).empty


def test_the_within_family_test_needs_four_sizes_on_three_settings_and_costs_every_rate():
    from benchmarks.report import tables

    rows = []
    for mixer, sizes in (("gla", [4, 8, 16, 32]), ("mamba", [4, 16])):
        for setting, kv in (("L=64, kv=4", 4), ("L=64, kv=8", 8), ("L=64, kv=16", 16)):
            for tss in sizes:
                ess = min(tss, kv) * 0.9  # ESS saturates at the demand, TSS keeps growing
                rows.append({"task": "mqar", "mixer": mixer, "setting": setting, "memory_demand": kv, "tss": float(tss),
                             "ess": ess, "accuracy": min(1.0, ess / kv), "group": f"{mixer}{tss}{kv}"})  # fmt: skip
    df = pd.DataFrame(rows)
    runs = pd.DataFrame({"group": np.repeat(df["group"], 2), "run_seconds": 1800.0})  # two rates per group
    fam = tables.state_family(df, runs)
    assert fam["family"].tolist() == ["gla"]  # mamba has two sizes: not a family
    (row,) = fam.to_dict("records")
    assert row["n"] == 12 and row["settings"] == 3 and row["sizes (TSS)"] == "4, 8, 16, 32"
    assert row["Spearman ESS/demand"] > row["Spearman TSS/demand"]
    assert row["CPU hours"] == 12 * 2 * 0.5
    from benchmarks.report import findings

    (line,) = findings.family_lines(fam)
    assert "ESS/demand ranks accuracy better, by" in line and "point estimate" in line and "12.0 CPU hours" in line


def test_a_groups_runs_cost_their_own_seconds_not_the_groups_wall_time_each():
    from benchmarks.report.rows import run_seconds

    parts = {"steps": 30.0, "evaluation": 5.0, "ess_over_training": 3.0, "final_ess": 2.0}
    grouped = {"wall_time_s": 500.0, "metrics": {"seconds": parts, "search": {"rates": [1e-3]}}}
    assert run_seconds(grouped) == 40.0
    assert run_seconds({"wall_time_s": 500.0, "metrics": {"seconds": parts}}) == 500.0  # a lone run: its wall time


def test_the_protocols_cost_adds_up_per_mixer_and_per_setting_shortest_first():
    from benchmarks.report import tables

    runs = pd.DataFrame(
        [{"task": "mqar", "mixer": m, "group": f"{m}{L}{kv}", "setting": f"L={L}, kv={kv}", "seq_len": L,
          "memory_demand": kv, "run_seconds": seconds}
         for m, seconds in (("gla", 3600.0), ("mamba", 7200.0))
         for L, kv in ((128, 4), (64, 16), (64, 4))
         for _rate in range(2)]
    )  # fmt: skip
    by_mixer = tables.protocol_cost(runs).set_index("mixer")
    assert by_mixer.loc["gla", "CPU hours"] == 6 and by_mixer.loc["mamba", "hours per group"] == 4
    assert by_mixer.loc["all", "groups"] == 6 and by_mixer.loc["all", "CPU hours"] == 18
    by_setting = tables.protocol_cost(runs, by="setting")
    assert by_setting["setting"].tolist() == ["L=64, kv=4", "L=64, kv=16", "L=128, kv=4", "all"]
    assert by_setting["CPU hours"].tolist() == [6, 6, 6, 18] and by_setting["runs"].tolist() == [4, 4, 4, 12]
    from benchmarks.report import findings

    (line,) = findings.cost_lines(tables.protocol_cost(runs))
    assert "6 groups" in line and "took 18.0 CPU hours (3.00 a group)" in line and "is 40: within it so far" in line
    runs["run_seconds"] *= 3  # 54 CPU hours
    (line,) = findings.cost_lines(tables.protocol_cost(runs))
    assert "took 54.0 CPU hours" in line and "exceeded already" in line
    assert findings.cost_lines(tables.protocol_cost(runs, by="setting"), by="setting") == [line]  # the same total
    assert findings.cost_lines(tables.protocol_cost(runs.iloc[:0])) == []  # nothing trained: no claim


def test_the_convergence_checks_count_what_the_sweep_owes():
    """Four groups: one solved at the grid's edge (counts as inside: it solved), one on a plateau inside
    the grid, one capped at its lowest rate (neither), one whose best row was pruned but inside, and
    the run its search trained furthest ended on a plateau (the group converged); attention at 0.98."""
    from benchmarks.report import findings, tables

    rates = [3e-4, 1e-3, 3e-3]
    best = pd.DataFrame({"task": "mqar", "group": list("abcd"), "mixer": ["attention", "gla", "mamba", "lru"],
                         "lr": [3e-3, 1e-3, 3e-4, 1e-3], "ended": ["solved", "plateau", "capped", "pruned"],
                         "accuracy": [0.98, 0.9, 0.4, 0.3]})  # fmt: skip
    runs = pd.DataFrame([{"group": g, "lr": lr, "stopped": "solved" if g == "a" and lr == 3e-3 else "budget",
                          "ended": "plateau" if g == "d" and lr == 3e-3 else "pruned", "steps": 5000 if lr == 3e-3 else 1000}
                         for g in "abcd" for lr in rates])  # fmt: skip
    (row,) = tables.convergence(best, runs, set("abcd")).to_dict("records")
    assert (row["groups"], row["solved or plateau"], row["rate inside the grid or solved"]) == (4, 3, 3)
    runs.loc[(runs["group"] == "d") & (runs["lr"] == 3e-3), "ended"] = "capped"  # its furthest run still improving
    (row,) = tables.convergence(best, runs, set("abcd")).to_dict("records")
    assert (row["groups"], row["solved or plateau"], row["rate inside the grid or solved"]) == (4, 2, 3)
    assert row["attention's lowest accuracy"] == 0.98
    (line,) = findings.convergence_lines(tables.convergence(best, runs, set("abcd")))
    assert "2 best rows (50%)" in line and "target 80%: not met" in line and "target 0.99: not met" in line
    assert tables.convergence(best, runs, {"z"}).empty  # no group of the converged protocol: no claim
    capped = best.assign(state="", setting="L=64, kv=4", steps=[800, 6000, 17600, 4000], continued="", parted_at=float("nan"))
    (line,) = findings.cap_lines(capped)  # the one row at the cap, named with its accuracy; none other
    assert "mamba at L=64, kv=4 0.400 (capped)" in line and "17,600 steps" in line and "gla" not in line
    capped.loc[2, ["steps", "continued"]] = [52800, "past the cap of 16,000 steps"]  # trained further, still capped
    (line,) = findings.cap_lines(capped)
    assert "mamba at L=64, kv=4 0.400 (capped, continued to 52,800 steps)" in line and "17,600" not in line
    (line,) = findings.continuation_lines(capped)
    assert "1 best rows were trained past" in line and "1 continue their capped run's curve exactly" in line
    capped.loc[2, "parted_at"] = 400.0  # retrained under other code: its curve left the capped run's at step 400
    (line,) = findings.cap_lines(capped)
    assert "mamba at L=64, kv=4 0.400 (capped, retrained to 52,800 steps)" in line
    (line,) = findings.continuation_lines(capped)
    assert "0 continue" in line and "mamba at L=64, kv=4, from step 400" in line and "new draws" in line


def test_coverage_sums_each_runs_own_time(tmp_path):
    """Coverage's hours: a group's four runs share one wall time, counted once each would be 4x too much."""
    import json

    from benchmarks.report.rows import coverage, plans

    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "p.json").write_text(json.dumps({"keys": list("abcd")}))
    parts = {"steps": 900.0}
    search = {"rates": [1e-3, 3e-3, 1e-2]}
    records = [{"key": k, "status": "ok", "wall_time_s": 3600.0, "metrics": {"seconds": parts, "search": search}} for k in "abc"]
    (row,) = coverage(plans(tmp_path), records)
    assert (row["planned"], row["ok"], row["run_hours"]) == (4, 3, 0.75)


def test_runs_only_the_family_preset_planned_stay_out_of_the_ranking_tables(tmp_path):
    """A group planned by both presets is ranked; one planned by state_family alone is not."""
    import json

    from benchmarks.report.rows import family_only_keys, plans

    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "published.json").write_text(json.dumps({"keys": ["a", "b"]}))
    (tmp_path / "plans" / "state_family.json").write_text(json.dumps({"keys": ["b", "c", "d"]}))
    assert family_only_keys(plans(tmp_path)) == {"c", "d"}
    (tmp_path / "plans" / "state_family.json").unlink()
    assert family_only_keys(plans(tmp_path)) == set()


def test_a_bound_within_monte_carlo_noise_of_zero_is_drawn_again_with_ten_times_the_resamples(monkeypatch):
    """With 999 draws a percentile bound's spread over bootstrap seeds is about 2% of the interval's
    width, so a bound nearer zero than 5% of it would let the seed decide the verdict."""
    from scipy import stats as scipy_stats

    drawn, real = [], scipy_stats.bootstrap

    def spy(*a, **k):
        drawn.append(k["n_resamples"])
        return real(*a, **k)

    monkeypatch.setattr(scipy_stats, "bootstrap", spy)
    y = np.random.default_rng(3).normal(size=12)
    near = pd.DataFrame({"mixer": [f"m{i}" for i in range(12)], "y": y - y.mean() + 0.84})  # low ~2% of width
    low, high = stats.cluster_bootstrap(near, _mean(near), within=None)
    assert drawn == [stats.RESAMPLES, stats.RESAMPLES * stats.REDRAW]
    assert 0 < abs(low) < stats.NEAR_ZERO * (high - low)
    drawn.clear()
    far = pd.DataFrame({"mixer": list("abcdefghij"), "y": [0.5, 0.6, 0.55, 0.45, 0.5, 0.6, 0.4, 0.5, 0.55, 0.5]})
    assert stats.cluster_bootstrap(far, _mean(far), within=None)[0] > 0.4
    assert drawn == [stats.RESAMPLES]  # a bound far from zero: one draw
