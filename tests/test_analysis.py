"""The leaderboard's analyses on synthetic rows whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from benchmarks import analysis
from benchmarks.ess import ess_bound


def _rows(n=30, seed=0, follows="ess"):
    rng = np.random.default_rng(seed)
    demand = rng.choice([4, 8, 16], n)
    ess = rng.uniform(1, 64, n)
    tss = rng.choice([8, 16, 32, 64], n).astype(float)
    driver = (ess if follows == "ess" else tss) / demand
    acc = driver / driver.max()  # accuracy a monotone function of one of the two
    return pd.DataFrame(
        {"task": "mqar", "mixer": rng.choice(["a", "b", "c"], n), "memory_demand": demand, "ess": ess, "tss": tss,
         "utilization": ess / tss, "bound": tss, "accuracy": acc, "no_recall": 1 / demand, "learned": "yes",
         "setting": [f"kv={d}" for d in demand], "state": ""}
    )  # fmt: skip


def _verdict(df):
    return analysis.verdict(analysis.correlations(df), analysis.within_mixer_correlations(df), analysis.state_use(df), df)


def test_verdict_says_which_state_measure_tracks_accuracy():
    for follows, word in (("ess", "holds"), ("tss", "does not hold")):
        df = _rows(follows=follows)
        text = _verdict(df)[0]
        # within settings (the test) and pooled: both say it
        assert text.count(f"better {word}") == 1 and text.index(f"better {word}") < text.index("Pooled"), text
        lo, hi = analysis.advantage_interval(df)
        assert (lo > 0) if follows == "ess" else (hi < 0)
        strat = analysis.stratified_advantage(df)
        assert strat["settings"] == 3 and ((strat["low"] > 0) if follows == "ess" else (strat["high"] < 0))


def test_pooling_demands_makes_any_state_measure_over_demand_track_accuracy_and_the_verdict_is_not_fooled():
    """Rows that learned nothing score their no-recall baseline, 1/kv on MQAR. Pooled over kv, accuracy
    then correlates with ESS/kv for any ESS at all (here random); within a setting it cannot."""
    df = _rows(n=60, seed=1).assign(accuracy=lambda d: 1 / d["memory_demand"], learned="not learned")
    pooled = analysis.correlations(df).set_index("rows").loc["all"]
    assert pooled["Spearman ESS/demand"] > 0.5  # the artefact
    assert analysis._demand_alone(df) == 1.0
    above = analysis.correlations(df).set_index("rows").loc["all, accuracy above baseline"]
    assert np.isnan(above["Spearman ESS/demand"])  # accuracy above baseline is 0 everywhere: no spread
    text = _verdict(df)[0]
    assert "better holds" not in text and "is not settled" in text, text


def test_rowwise_spearman_is_scipys():
    from scipy import stats

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (50, 12)).astype(float), rng.normal(size=(50, 12))  # ties in x
    ours = analysis._rowwise_spearman(x, y)
    assert np.allclose(ours, [stats.spearmanr(a, b)[0] for a, b in zip(x, y, strict=True)])


def test_state_use_thresholds():
    df = pd.DataFrame(
        {"task": "mqar", "setting": "s", "mixer": "m", "state": "", "memory_demand": [8, 8, 8, 8], "tss": [16, 16, 16, 4],
         "ess": [15.0, 3.0, 9.0, 3.9], "accuracy": 0.5, "learned": "yes"}
    )  # fmt: skip
    df["utilization"] = df["ess"] / df["tss"]
    df["bound"] = df["tss"].astype(float)  # states smaller than the splits: the bound is TSS
    use = analysis.state_use(df)["state use"].tolist()
    # 15/16 >= 0.9: saturated; 3 < 8 <= 16 and 3 < 8: collapsed; 9: neither; TSS 4 < demand: saturated, not collapsed
    assert use == ["saturated", "collapsed", "", "saturated"]
    # attention's bound is geometric: at L 64 with TSS 64 the window [16, 48) allows a mean ESS of 24 at most
    assert ess_bound(64, 64, (16, 48)) == sum(min(i, 64 - i) for i in range(16, 48)) / 32 == 24.0
    attention = df.iloc[:1].assign(tss=64, bound=24.0, ess=23.0, memory_demand=4)
    assert analysis.state_use(attention)["state use"].tolist() == ["saturated"]  # 23 of at most 24, not 23 of 64


def test_mad_score_is_the_mean_over_settings_then_tasks_of_the_best_on_validation():
    df = pd.DataFrame(
        [
            {"mixer": "m", "task": "compression", "setting": "level 0", "accuracy": 0.2, "val_accuracy": 0.9, "val_loss": 1},
            {"mixer": "m", "task": "compression", "setting": "level 0", "accuracy": 0.9, "val_accuracy": 0.5, "val_loss": 1},
            {"mixer": "m", "task": "compression", "setting": "level 1", "accuracy": 0.6, "val_accuracy": 0.6, "val_loss": 1},
            {"mixer": "m", "task": "selective_copying", "setting": "level 0", "accuracy": 1.0, "val_accuracy": 1, "val_loss": 0},
            {"mixer": "m", "task": "mqar", "setting": "L=64, kv=4", "accuracy": 0.0, "val_accuracy": 0, "val_loss": 9},
        ]
    )
    score = analysis.mad_scores(df).set_index("mixer").loc["m"]
    # compression: (0.2 chosen on validation + 0.6) / 2 = 0.4; selective copying 1.0; MQAR is not a MAD task
    assert score["MAD score"] == (0.4 + 1.0) / 2 and score["tasks"] == 2
    # a second mixer run on compression level 0 only: both are scored on that shared setting alone
    other = pd.DataFrame(
        [{"mixer": "n", "task": "compression", "setting": "level 0", "accuracy": 0.5, "val_accuracy": 1, "val_loss": 0}]
    )
    scores = analysis.mad_scores(pd.concat([df, other])).set_index("mixer")
    assert scores.loc["m", "MAD score"] == 0.2 and scores.loc["n", "MAD score"] == 0.5
    assert scores.loc["m", "score, all its settings"] == 0.7 and scores.loc["m", "settings run"] == 3
    assert scores.index.tolist() == ["n", "m"]  # ranked on the shared setting


def test_seed_replicates_stay_out_of_the_leaderboard_rows_and_show_their_spread():
    from benchmarks.store import design_key, group_key

    cfg = {"seed": 0, "architecture": {"name": "gla"}, "task": {"name": "mqar"}, "train": {"lr": 1e-3, "steps": 10}}
    again = {**cfg, "seed": 1, "train": {**cfg["train"], "lr": 3e-3}}
    assert group_key(cfg) != group_key(again) and design_key(cfg) == design_key(again)  # same design, other seed

    rows = []
    for design, mixer in enumerate("abcd"):
        for seed in (0, 1, 2) if mixer != "d" else (0,):
            acc = 0.2 + 0.2 * design + 0.01 * seed
            rows.append({"design": f"d{design}", "seed": seed, "task": "mqar", "setting": "L=64, kv=8", "mixer": mixer,
                         "state": "", "accuracy": acc, "ess": 5.0 + design + 0.1 * seed, "tss": 16.0 - design,
                         "memory_demand": 8, "learned": "yes" if acc > 0.3 else "not learned"})  # fmt: skip
    df = pd.DataFrame(rows)
    main = analysis.first_seed(df)
    assert sorted(main["mixer"]) == list("abcd") and (main["seed"] == 0).all()
    spread = analysis.seed_spread(df).set_index("mixer")
    assert list(spread.index) == list("abc")  # d has one seed
    assert spread.loc["a", "accuracy"] == "0.200 / 0.210 / 0.220" and spread.loc["a", "accuracy range"] == pytest.approx(0.02)
    assert spread.loc["a", "learned"] == "none" and spread.loc["c", "learned"] == "all"
    verdicts = analysis.seed_verdicts(df)
    assert list(verdicts["seed"]) == [0, 1, 2] and (verdicts["n"] == 3).all()
    # accuracy rises with ESS and falls with TSS at every seed
    assert (verdicts["Spearman ESS"] == 1).all() and (verdicts["Spearman TSS"] == -1).all()
    lines = analysis.seed_summary(analysis.seed_spread(df), verdicts)
    assert lines[0] == "No replicated design's best accuracy moves by more than 0.1 with the seed."
    assert lines[1].endswith("2.00 / 2.00 / 2.00 at seeds 0, 1, 2: the same sign at every seed.")
    # one design whose seed 1 learns where seed 0 does not: named, with its spread
    df.loc[(df["mixer"] == "b") & (df["seed"] == 1), "accuracy"] = 0.95
    lines = analysis.seed_summary(analysis.seed_spread(df), analysis.seed_verdicts(df))
    assert lines[0].startswith("mqar L=64, kv=8: b scores 0.400 / 0.950 / 0.420 at seeds 0, 1, 2 (a range of 0.55)")
    assert lines[0].endswith("its rows elsewhere on this page are the run of its median seed (of 3).")  # median_seed_rows
    assert "2.00 / 1.00 / 2.00 at seeds 0, 1, 2: the same sign" in lines[1]
    two = df[df["seed"] < 2]  # two seeds have no middle: the rows elsewhere are the lowest seed's
    lines = analysis.seed_summary(analysis.seed_spread(two), analysis.seed_verdicts(two))
    assert lines[0].endswith("its rows elsewhere on this page are seed 0, one draw of that spread.")
    # at seed 1 accuracy now falls with ESS and rises with TSS: the verdict does not survive the seed
    seed1 = df["seed"] == 1
    df.loc[seed1, "accuracy"] = 1.0 - df.loc[seed1, "accuracy"]
    lines = analysis.seed_summary(analysis.seed_spread(df), analysis.seed_verdicts(df))
    assert lines[-1].endswith("2.00 / -1.00 / 2.00 at seeds 0, 1, 2: the sign changes with the seed.")


def test_runs_compare_under_one_protocol_whatever_their_mixer_or_rate():
    from benchmarks.store import protocol_key

    cfg = {"seed": 0, "architecture": {"name": "gla"}, "task": {"name": "mqar", "seq_len": 64}, "model": {"d_model": 64},
           "data": {"num_train": 100}, "train": {"lr": 1e-3, "steps": 800}}  # fmt: skip
    other_mixer = {**cfg, "architecture": {"name": "attention"}, "train": {**cfg["train"], "lr": 1e-2}}
    longer = {**cfg, "train": {**cfg["train"], "steps": 2000}}
    wider = {**cfg, "model": {"d_model": 128}}
    assert protocol_key(cfg) == protocol_key(other_mixer)
    assert len({protocol_key(c) for c in (cfg, longer, wider)}) == 3  # another budget or width is another protocol


def test_verdict_names_collapsed_rows_that_solve_the_task():
    """Collapse (ESS under the demand with room to spare) is read as failure to use the state; a row
    that collapses and still solves the task must be called out, and one that fails must not be."""
    df = _rows()
    df.loc[0, ["mixer", "ess", "tss", "bound", "memory_demand", "accuracy"]] = ["solver", 1.0, 64.0, 64.0, 8, 0.99]
    df.loc[1, ["mixer", "ess", "tss", "bound", "memory_demand", "accuracy"]] = ["failer", 1.0, 64.0, 64.0, 8, 0.2]
    text = _verdict(df)[0]
    assert "1 solves the task" in text and "solver" in text.split("solves the task")[1]
    assert "failer" not in text.split("solves the task")[1]
    assert "summed over channels" not in text  # no ess_total: no claim about where the memory is
    # with the ESS summed over channels, the spread is measured, not asserted
    df["ess_total"] = df["ess"] * 64
    assert "summed over channels (64 to 64) reaches the demand in 1 of the 1: the memory is spread" in _verdict(df)[0]
    df.loc[0, "ess_total"] = 4.0  # below the demand of 8: the memory is not there either
    assert "(4 to 4) reaches the demand in 0 of the 1." in _verdict(df)[0]


def test_tolerance_table_runs_the_verdicts_test_at_each_tolerance():
    """Accuracy follows the ESS counted at one tolerance (block:0.1) and not the one at another
    (machine precision, here random): the within-setting advantage must be positive at the first and
    not at the second, and TSS, which no tolerance changes, must score the same in both."""
    from benchmarks.ess import RELATIVE_TOLERANCES

    df = _rows(n=60, seed=2, follows="ess").assign(key=lambda d: [f"k{i}" for i in range(len(d))])
    noise = np.random.default_rng(3).uniform(1, 64, len(df))
    records = [
        {"key": k, "status": "ok", "metrics": {"ess": {
            "ess_mean": float(n),
            "ess_mean_by_tolerance": {f"{kind}:{r:g}": float(e if (kind, r) == ("block", 0.1) else n)
                                      for kind in ("block", "operator") for r in RELATIVE_TOLERANCES}}}}
        for k, e, n in zip(df["key"], df["ess"], noise, strict=True)
    ]  # fmt: skip
    table = analysis.tolerance_sensitivity(records, df).set_index("tolerance")
    col = "mqar: ESS's advantage within settings"
    assert table.loc["block:0.1", col] > 0.5
    assert table.loc[analysis.MACHINE_TOLERANCE, col] < table.loc["block:0.1", col] - 0.5
    tss_only = analysis.stratified_advantage(df.assign(ess=noise))
    assert table.loc[analysis.MACHINE_TOLERANCE, col] == pytest.approx(tss_only["diff"])


def test_accuracy_falling_with_ess_is_no_support_for_the_claim():
    """The claim is directional (more effective state, higher accuracy). Rows whose accuracy falls as
    ESS rises correlate strongly with ESS, negatively: that must count against ESS, not for it."""
    df = _rows(follows="ess").assign(accuracy=lambda d: 1 - d["accuracy"])
    strat = analysis.stratified_advantage(df)
    assert strat["ess"] < -0.9 and strat["diff"] < 0 and strat["high"] < 0
    lo, hi = analysis.advantage_interval(df)
    assert hi < 0
    text = _verdict(df)[0]
    assert "better holds" not in text and "does not hold" in text and "negative: rows that use more state" in text, text


def test_a_group_whose_rate_grid_is_unfinished_is_held_back_and_a_failed_rate_counts_as_tried():
    """A best-of-grid row must be the best of the whole grid: a group a sweep has run at 2 of the 3
    rates its protocol's other groups ran stays off the leaderboard; one whose third rate failed is done."""
    from benchmarks.store import group_key

    def record(mixer, lr, status="ok", steps=800):
        cfg = {"seed": 0, "architecture": {"name": mixer}, "task": {"name": "mqar", "seq_len": 64}, "model": {"d_model": 64},
               "data": {"num_train": 100}, "train": {"lr": lr, "steps": steps}}  # fmt: skip
        return {"key": f"{mixer}{lr}{steps}", "group": group_key(cfg), "config": cfg, "status": status}

    rates = (1e-3, 3e-3, 1e-2)
    records = [record("attention", lr) for lr in rates] + [record("gla", lr) for lr in rates[:2]]
    records += [record("mamba", lr) for lr in rates[:2]] + [record("mamba", rates[2], status="failed")]
    records += [record("lru", 1e-3, steps=2000)]  # another protocol (budget): its own grid, complete
    held = analysis.incomplete_groups(records)
    assert held == [records[3]["group"]]  # gla's, and only gla's

    runs = pd.DataFrame(
        {"group": [r["group"] for r in records if r["status"] == "ok"], "lr": 0.0, "val_accuracy": 0.5, "val_loss": 1.0,
         "accuracy": 0.5, "no_recall": 0.25, "task": "mqar", "seq_len": 64, "memory_demand": 4, "mixer": "m", "tss": 1}
    )  # fmt: skip
    assert held[0] not in set(analysis.best_rows(runs, held)["group"])
    assert len(analysis.best_rows(runs, held)) == len(analysis.best_rows(runs)) - 1


def _record(mixer, backbone, kv, lr, acc, val, ess=4.0, steps=2000, wall=10.0):
    """A record with what the analyses read: MQAR at L 64, one learning rate, the given backbone."""
    from benchmarks.store import group_key, run_key

    cfg = {"seed": 0, "architecture": {"name": mixer}, "model": {"d_model": 64, "backbone": backbone},
           "task": {"name": "mqar", "seq_len": 64, "num_kv_pairs": kv}, "data": {"num_train": 100},
           "train": {"lr": lr, "steps": steps}}  # fmt: skip
    ess_summary = {"ess_mean": ess, "entropy_ess_mean": ess, "window": [16, 48], "per_layer": [{"channels": 64}],
                   "ess_mean_by_tolerance": {analysis.HEADLINE_TOLERANCE: ess}}  # fmt: skip
    metrics = {"accuracy": acc, "val_accuracy": val, "val_loss": 1 - val, "steps": steps, "tss": 16, "cache_bytes": 1,
               "parameters": 1, "kernels": ["reference"], "ess": ess_summary,
               "task": {"name": "mqar", "seq_len": 64, "num_kv_pairs": kv, "memory_demand": kv,
                        "no_recall_accuracy": 1 / kv}}  # fmt: skip
    return {"key": run_key(cfg), "group": group_key(cfg), "config": cfg, "seed": 0, "status": "ok", "metrics": metrics,
            "provenance": {"commit": "abc", "device": "cpu"}, "wall_time_s": wall}  # fmt: skip


def test_backbone_ablation_sets_each_backbones_best_side_by_side_and_names_what_the_convolution_does():
    records = []
    for backbone, accs in (("zoology", {"a": 0.99, "b": 0.95, "c": 0.25}), ("mad", {"a": 0.26, "b": 0.97, "c": 0.24})):
        for mixer, acc in accs.items():
            records += [
                _record(mixer, backbone, 4, 1e-3, acc - 0.1, acc - 0.1),
                _record(mixer, backbone, 4, 1e-2, acc, acc, ess=7.0),
            ]
    records.append(_record("a", "mad", 4, 1e-2, 1.0, 1.0, steps=800))  # another protocol: never mixed in
    long = analysis.backbone_ablation(records)
    table = analysis.ablation_table(long).set_index("mixer")  # wide only for the page
    assert table.loc["a", "kv=4 accuracy: zoology"] == 0.99 and table.loc["a", "kv=4 accuracy: mad"] == 0.26
    assert table.loc["a", "kv=4 ESS: zoology"] == 7.0  # the ESS of the best rate's row
    assert table.loc["a", "kv=4 no-recall"] == 0.25
    findings = " ".join(analysis.ablation_findings(long))
    assert "1 of 3 mixers learn" in findings and "MAD's mixer + MLP blocks: a;" in findings
    assert "in both: b;" in findings and "in no backbone: c." in findings
    cost = analysis.backbone_cost(records).set_index(["backbone", "setting"])
    assert cost.loc[("zoology", "all"), "runs"] == 6 and cost.loc[("mad", "all"), "runs"] == 7
    assert cost.loc[("zoology", "L=64, kv=4"), "median run (s)"] == 10.0


def test_a_mixer_with_its_own_convolution_takes_its_mad_cell_as_its_conv_mlp_cell():
    """conv_mlp builds a short_conv mixer's mad model unchanged, so the sweep does not train it twice."""
    cells = (("mamba", "zoology", 0.3), ("mamba", "mad", 0.8), ("a", "zoology", 0.9), ("a", "mad", 0.3), ("a", "conv_mlp", 0.7))
    records = [_record(m, b, 4, 1e-2, acc, acc) for m, b, acc in cells]
    long = analysis.backbone_ablation(records)
    table = analysis.ablation_table(long).set_index("mixer")
    assert table.loc["mamba", "kv=4 accuracy: conv_mlp"] == 0.8 and table.loc["a", "kv=4 accuracy: conv_mlp"] == 0.7
    assert long.set_index(["mixer", "backbone"]).loc[("mamba", "conv_mlp"), "repeated"]  # its mad run, not trained again
    findings = " ".join(analysis.ablation_findings(long))
    assert "makes 1 learn that do not without it: a." in findings
    assert "Zoology's is ahead by more than 0.1 for a:" in findings  # 0.9 against 0.7 with the BaseConv in both


def test_headline_has_one_row_per_mixer_with_each_familys_mean_over_shared_settings():
    df = pd.DataFrame(
        {"mixer": ["a", "a", "b", "b", "a", "b", "a"], "task": ["mqar"] * 4 + ["compression"] * 2 + ["mqar"],
         "setting": ["kv=4", "kv=8", "kv=4", "kv=8", "L=32", "L=32", "kv=16"],
         "accuracy": [1.0, 0.8, 0.5, 0.3, 0.6, 0.4, 0.1], "val_accuracy": [1.0, 0.8, 0.5, 0.3, 0.6, 0.4, 0.1],
         "val_loss": 0.0, "learned": ["yes", "yes", "yes", "not learned", "yes", "yes", "yes"],
         "ess": [4.0, 6.0, 2.0, 2.0, 1.0, 3.0, 9.0], "tss": [16, 16, 8, 8, 16, 8, 16]}
    )  # fmt: skip
    head = analysis.headline(df).set_index("mixer")
    assert list(head.columns[:5]) == ["MQAR acc", "MQAR acc above base", "MQAR learned", "MQAR ESS", "MQAR TSS"]  # MQAR first
    assert head.loc["a", "MQAR TSS"] == 16 and head.loc["a", "MQAR ESS"] == 5.0  # both the mean over the same rows
    above = analysis.headline(df.assign(no_recall=0.5)).set_index("mixer")  # (acc - base) / (1 - base), then the mean
    assert above.loc["a", "MQAR acc above base"] == pytest.approx(0.8)
    assert above.loc["b", "MQAR acc above base"] == pytest.approx(-0.2)
    assert head.loc["a", "MQAR acc"] == 0.9  # kv=16 only a has: left out of the shared mean
    assert head.loc["b", "MQAR learned"] == "1/2" and head.loc["b", "MAD acc"] == 0.4
    assert list(head.index) == ["a", "b"]
    assert "MQAR 2 of the 2 run" in analysis.short_verdict(df.assign(no_recall=0.0, memory_demand=4))[0]


def test_the_headline_leaves_out_a_setting_where_a_mixers_other_state_size_has_not_landed():
    df = pd.DataFrame({"mixer": ["a", "a", "a", "b", "b"], "task": "mqar", "setting": ["kv=4", "kv=4", "kv=8", "kv=4", "kv=8"],
                       "state": ["s=1", "s=2", "s=1", "default", "default"], "accuracy": [0.5, 0.9, 0.1, 1.0, 0.8],
                       "val_accuracy": [0.5, 0.9, 0.1, 1.0, 0.8], "val_loss": 0.0, "learned": "yes",
                       "ess": 1.0, "tss": 1.0})  # fmt: skip
    head = analysis.headline(df).set_index("mixer")
    assert head.loc["a", "MQAR acc"] == 0.9 and head.loc["b", "MQAR acc"] == 1.0  # kv=8 waits for a's s=2
    assert head.loc["a", "MQAR learned"] == "1/1"


def test_a_mixer_that_never_learns_is_explained_by_its_linearity_or_by_the_models_where_it_does():
    df = pd.DataFrame({"task": "mqar", "mixer": ["lru", "lru", "gla", "mamba", "based", "hyena"],
                       "setting": ["kv=4", "kv=8", "kv=4", "kv=4", "kv=4", "kv=4"],
                       "accuracy": [0.24, 0.12, 0.25, 0.26, 0.99, 0.255], "no_recall": [0.25, 0.125, 0.25, 0.25, 0.25, 0.25],
                       "stopped": ["budget", "plateau", "plateau", "budget", "solved", "plateau"]})  # fmt: skip
    ablation = pd.DataFrame(  # tidy: one row per mixer, setting and backbone
        [(m, "L=64, kv=4", b, acc, 0.25, b == "conv_mlp" and m == "mamba", 2000, 3)
         for m, accs in (("mamba", (0.26, 0.75, 0.75)), ("gla", (0.25, 0.29, 0.29)), ("hyena", (0.255, 0.28, 0.28)))
         for b, acc in zip(("zoology", "mad", "conv_mlp"), accs, strict=True)],
        columns=["mixer", "setting", "backbone", "accuracy", "no_recall", "repeated", "budget", "rates"],
    )  # fmt: skip
    lines = analysis.never_learned(df, ablation)
    assert [line.split(" ")[1] for line in lines] == ["gla", "hyena", "lru", "mamba"]  # based learned: not listed
    gla, hyena, lru, mamba = lines
    assert "linear time-invariant" in lru and "at most -0.005" in lru and "on both settings" in lru
    assert "(2,000 steps, three rates)" in mamba  # the protocol's facts, from the records
    assert "0.750 at L 64, kv 4 in MAD's mixer + MLP blocks" in mamba and "1 of its 1 best runs ended at the step budget" in mamba
    # Mamba has its own convolution: its conv_mlp cell repeats its mad run, so it is not cited as a second model
    assert "with a BaseConv" not in mamba and mamba.count("0.750") == 1
    assert "step budget" not in lru and "step budget" not in gla  # a fixed filter: more steps cannot help; gla plateaued
    assert "time-invariant" not in gla and "its best there: 0.290" in gla
    # Hyena declares itself a gated convolution: Zoology's width finding, and the ablation's evidence beside it
    assert "gated convolution" in hyena and "2312.04927" in hyena and "its best there: 0.280" in hyena
    assert not any("gated convolution" in line for line in (gla, lru, mamba))


def test_backbone_change_compares_the_two_leaderboards_on_the_settings_both_have():
    def best(accs: dict, setting="L=64, kv=4") -> pd.DataFrame:
        L, kv = (int(x.split("=")[1]) for x in setting.split(", "))
        return pd.DataFrame({"task": "mqar", "setting": setting, "seq_len": L, "memory_demand": kv, "mixer": list(accs),
                             "accuracy": list(accs.values()), "val_accuracy": list(accs.values()), "val_loss": 0.0,
                             "no_recall": 0.25, "ess": [1.0, 2.0, 3.0][: len(accs)], "tss": 8})  # fmt: skip

    new = pd.concat([best({"a": 0.99, "b": 0.95, "c": 0.25}), best({"a": 0.9, "b": 0.2, "c": 0.1}, "L=256, kv=64"),
                     best({"a": 0.99}, "L=128, kv=4")])  # fmt: skip
    old = pd.concat([best({"a": 0.26, "b": 0.97, "c": 0.6}), best({"a": 0.1, "b": 0.1, "c": 0.1}, "L=128, kv=4")])
    lines = analysis.backbone_change(new, old)
    assert (
        "(L=64, kv=4), 2 of 3 mixers learn" in lines[0]
        and "Zoology's model: a, b; 2 did in MAD's mixer + MLP blocks: b, c." in lines[0]
    )
    assert "Higher" in lines[1] and "a (L 64, kv 4 0.260 -> 0.990)" in lines[1]
    assert "Lower" in lines[2] and "c (L 64, kv 4 0.600 -> 0.250)" in lines[2] and "b (" not in lines[2]  # 0.02: not moved
    assert "ESS's advantage" in lines[3]
    assert analysis.backbone_change(new, old.iloc[0:0]) == []


def test_the_ladder_orders_settings_by_difficulty_and_says_where_each_mixer_runs_out():
    df = pd.DataFrame({"task": "mqar", "mixer": ["a", "a", "a", "b", "b"],
                       "setting": ["L=128, kv=32", "L=64, kv=4", "L=64, kv=16", "L=64, kv=4", "L=64, kv=16"],
                       "seq_len": [128, 64, 64, 64, 64], "memory_demand": [32, 4, 16, 4, 16],
                       "accuracy": [0.5, 0.99, 0.95, 0.29, 0.07], "val_accuracy": [0.5, 0.99, 0.95, 0.29, 0.07], "val_loss": 0.0,
                       "no_recall": [1 / 32, 0.25, 1 / 16, 0.25, 1 / 16]})  # fmt: skip
    table = analysis.ladder(df)
    lines = analysis.ladder_lines(table)  # sentences from the table, not beside it
    assert list(table.columns) == ["mixer", "L=64, kv=4", "L=64, kv=16", "L=128, kv=32"]
    assert list(table["mixer"]) == ["a", "b", "no-recall baseline"] and table.iloc[2, 1] == 0.25
    worse_far = df.assign(accuracy=np.where(df["seq_len"] == 128, 0.0, np.where(df["mixer"] == "b", 0.9, df["accuracy"])))
    assert list(analysis.ladder(worse_far)["mixer"][:2]) == ["a", "b"]  # ranked on the settings both ran
    assert pd.isna(table.set_index("mixer").loc["b", "L=128, kv=32"])  # not run: blank, not zero
    assert lines[0] == "a: first below 0.9 at L=128, kv=32 (0.500); above the baseline + 0.05 up to L=128, kv=32 (0.500)."
    assert lines[1] == "b: first below 0.9 at L=64, kv=4 (0.290); never above the baseline + 0.05."
