"""The leaderboard's analyses on synthetic rows whose answers are known."""

import numpy as np
import pandas as pd

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
         "utilization": ess / tss, "bound": tss, "accuracy": acc, "learned": "yes", "setting": "s", "state": ""}
    )  # fmt: skip


def test_verdict_says_which_state_measure_tracks_accuracy():
    for follows, word in (("ess", "holds"), ("tss", "does not hold")):
        df = _rows(follows=follows)
        text = analysis.verdict(analysis.correlations(df), analysis.within_mixer_correlations(df), analysis.state_use(df), df)
        assert f"better {word}" in text[0], text[0]
        lo, hi = analysis.advantage_interval(df)
        assert (lo > 0) if follows == "ess" else (hi < 0)


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
