"""The report pipeline's stages (`benchmarks/report/`) on hand-made tables whose answers are known."""

import ast
from pathlib import Path

import pandas as pd

from benchmarks.report import columns, render, stats

REPORT = Path(__file__).resolve().parent.parent / "benchmarks" / "report"
STAGES = ["columns", "rows", "stats", "tables", "findings", "render"]  # lowest first


def test_best_of_sweep_chooses_on_validation_then_loss_then_the_lower_rate_never_on_test():
    runs = pd.DataFrame(
        {"group": ["g", "g", "g", "h", "h"], "lr": [1e-3, 3e-3, 1e-2, 1e-3, 1e-2],
         "val_accuracy": [0.8, 0.9, 0.9, 0.5, 0.5], "val_loss": [0.3, 0.2, 0.2, 0.4, 0.1],
         "accuracy": [0.99, 0.7, 0.6, 0.1, 0.2]}
    )  # fmt: skip
    best = stats.best_of_sweep(runs, "group").set_index("group")
    assert best.loc["g", "lr"] == 3e-3  # tied with 1e-2 on validation accuracy and loss: the lower rate
    assert best.loc["g", "accuracy"] == 0.7  # not the run with the best test accuracy
    assert best.loc["h", "lr"] == 1e-2  # tied on accuracy: the lower validation loss
    picked = stats.select_best(runs).set_index("group")
    assert picked.loc["g", "lr_grid"] == "0.001,0.003,0.01" and picked.loc["g", "grid_spread"] == "0.60-0.99"


def test_best_of_sweep_needs_no_rate_column_to_choose_a_mixers_best_state():
    per = pd.DataFrame({"mixer": ["a", "a"], "task": "mqar", "setting": "kv=4", "state": ["s=1", "s=2"],
                        "val_accuracy": [0.4, 0.6], "val_loss": [1.0, 2.0]})  # fmt: skip
    assert stats.best_per_setting(per)["state"].tolist() == ["s=2"]


def test_shared_settings_keeps_the_settings_every_mixer_has():
    per = pd.DataFrame({"mixer": ["a", "b", "a", "a", "b"], "task": ["mqar", "mqar", "mqar", "compression", "compression"],
                        "setting": ["kv=4", "kv=4", "kv=8", "L=32", "L=32"]})  # fmt: skip
    assert stats.shared_settings(per).tolist() == [True, True, False, True, True]


def test_a_setting_where_only_some_of_a_mixers_state_sizes_have_landed_is_not_shared():
    rows = pd.DataFrame({"mixer": ["a", "a", "a", "b", "b"], "task": "mqar",
                         "setting": ["kv=4", "kv=4", "kv=8", "kv=4", "kv=8"],
                         "state": ["s=1", "s=2", "s=1", "default", "default"]})  # fmt: skip
    assert stats.shared_settings(rows).tolist() == [True, True, False, True, False]
    rows.loc[len(rows)] = {"mixer": "a", "task": "mqar", "setting": "kv=8", "state": "s=2"}  # its other size lands
    assert stats.shared_settings(rows).all()


def test_the_registry_names_every_row_column_once_and_formats_cells_by_its_labels():
    keys = [c.key for c in columns.COLUMNS]
    assert len(keys) == len(set(keys))
    assert set(columns.NARROW) <= set(keys) and set(columns.PROVENANCE) <= set(keys)
    assert all(c.read is not None for c in columns.COLUMNS[: len(columns.RUN_COLUMNS)])
    table = pd.DataFrame({"accuracy": [0.98765], "lr": [0.003], "ESS summed": [12345.6], "mixer": ["a<b"]})
    md = render.markdown_table(table)
    assert md.splitlines()[2] == "| 0.988 | 0.003 | 12,346 | a<b |"
    html = render.html_table(table, "t")
    assert ">0.988<" in html and "a&lt;b" in html and "<b" not in html.replace("<tbody", "")
    assert render.markdown_table(table, {"accuracy": "{:.1f}"}).splitlines()[2].startswith("| 1.0 |")  # a table's own


def test_report_stages_import_only_the_stages_below_them():
    for i, stage in enumerate(STAGES):
        tree = ast.parse((REPORT / f"{stage}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        above = {f"benchmarks.report.{s}" for s in STAGES[i + 1 :]} | {"benchmarks.leaderboard", "benchmarks.analysis"}
        assert not imported & above, f"report/{stage}.py imports {sorted(imported & above)}"


def test_a_row_under_its_baseline_by_more_than_sampling_noise_is_flagged_and_named():
    from benchmarks.report import findings

    runs = pd.DataFrame(
        {"group": ["sw8", "sw32", "lru", "hy", "old"], "task": "mqar",
         "mixer": ["sliding_window", "sliding_window", "lru", "hyena", "lru"],
         "state": ["window_size=8", "window_size=32", "state_dim=16", "filter_order=64", ""], "setting": "L=128, kv=8",
         "seq_len": 128, "memory_demand": 8, "tss": 8, "lr": 1e-3, "val_accuracy": 0.5, "val_loss": 1.0,
         # 0.125 - 2.58 * sqrt(0.125 * 0.875 / 1000) = 0.098: 0.084 is under it, 0.110 is noise
         "accuracy": [0.084, 0.650, 0.110, 0.180, 0.050], "no_recall": 0.125,
         "test_sequences": [1000, 1000, 1000, 1000, float("nan")]}
    )  # fmt: skip
    best = stats.best_rows(runs).set_index("group")
    assert best["learned"].to_dict() == {"sw8": "below baseline", "sw32": "yes", "lru": "not learned", "hy": "yes",
                                         "old": "not learned"}  # fmt: skip
    assert stats.below_baseline(runs.assign(test_sequences=100_000)).tolist() == [True, False, True, False, True]
    lines = findings.below_baseline_lines(best.reset_index())
    assert len(lines) == 1 and lines[0].startswith("mqar: below the no-recall baseline")
    assert "sliding_window window_size=8 at L=128, kv=8 0.084 (baseline 0.125)" in lines[0] and "lru" not in lines[0]
    assert findings.below_baseline_lines(best.reset_index().assign(learned="not learned")) == []


def test_the_board_flags_the_row_it_shows_below_its_baseline():
    import copy

    from record_factory import CONFIG, valid_record

    from benchmarks.report import tables

    records = []
    for mixer, accuracy in (("sliding_window", 0.083), ("lru", 0.120), ("gla", 0.600)):
        cfg = copy.deepcopy(CONFIG)
        cfg["architecture"], cfg["data"] = {"name": mixer}, {"num_test": 1000}
        record = valid_record(cfg, accuracy=accuracy)
        record["metrics"]["task"]["no_recall_accuracy"] = 0.125
        records.append(record)
    board = tables.board(records).set_index("mixer")
    assert board["learned"].to_dict() == {"sliding_window": "below baseline", "lru": "not learned", "gla": "yes"}


def test_the_ess_curve_figure_takes_the_same_row_whatever_order_the_records_come_in():
    """Each mixer's curve is its largest state's; Hyena's filter orders share one TSS (L), so the larger
    order must be chosen by its knob, not by the order the store listed the records in."""
    from benchmarks.figures import ess_curves

    best = pd.DataFrame({"key": ["f16", "f64", "f8"], "task": "compression", "setting": "L=32", "mixer": "hyena",
                         "state": ["filter_order=16", "filter_order=64", "filter_order=8"], "state_value": [16.0, 64.0, 8.0],
                         "tss": [32, 32, 32]})  # fmt: skip

    def record(key, v):
        return {"key": key, "status": "ok", "metrics": {"ess": {"positions": [0, 1], "ess_curve": [v, v]}}}

    records = [record("f16", 1.0), record("f64", 2.0), record("f8", 3.0)]
    for rows in (best, best.iloc[::-1], best.iloc[[1, 2, 0]]):
        assert ess_curves(records, rows.reset_index(drop=True))["ESS"].tolist() == [2.0, 2.0]
