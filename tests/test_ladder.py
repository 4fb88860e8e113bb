"""The ladder's upper rungs train the mixers their rule picks on the rung below (benchmarks/ladder.py)."""

import copy
import json
from pathlib import Path

import pytest
from record_factory import CONFIG, valid_record

from benchmarks import bench, ladder

ROOT = Path(__file__).resolve().parent.parent


def _group(mixer: str, state: int, accuracy: float, no_recall: float = 0.25) -> list[dict]:
    """A group's records at two rates, the better one at `accuracy` (on validation and test alike)."""
    out = []
    for lr, acc in ((1e-3, accuracy), (3e-3, accuracy - 0.02)):
        cfg = copy.deepcopy(CONFIG)
        cfg["architecture"] = {"name": mixer, "state": state}
        cfg["train"]["lr"] = lr
        record = valid_record(cfg, accuracy=acc)
        record["metrics"]["task"]["no_recall_accuracy"] = no_recall
        out.append(record)
    return out


def test_a_mixer_earns_the_rung_above_by_its_best_state_size_under_each_rule():
    records = [
        *_group("lru", 0, 0.27), *_group("lru", 1, 0.30),  # learned by neither size (baseline 0.25 + 0.05)
        *_group("gla", 0, 0.20), *_group("gla", 1, 0.32),  # learned by its larger size only
        *_group("attention", 0, 0.95),
    ]  # fmt: skip
    groups = sorted({r["group"] for r in records})
    assert ladder.choose(records, groups, "learned") == ["attention", "gla"]  # the registry's order
    assert ladder.choose(records, groups, "solved") == ["attention"]
    # the best state size is chosen on validation, the rule read on test: a size that wins on
    # validation and fails on test decides, as on the page's ladder
    for r in records:
        if r["config"]["architecture"] == {"name": "gla", "state": 1}:
            r["metrics"]["accuracy"] = 0.21
    assert ladder.choose(records, groups, "learned") == ["attention"]


def test_no_choice_while_a_group_of_the_rung_below_has_not_landed():
    records = [*_group("attention", 0, 0.95), *_group("gla", 0, 0.5)]
    groups = sorted({r["group"] for r in records})
    assert ladder.choose(records[:2], groups, "learned") is None
    assert ladder.choose([], groups, "learned") is None
    missing_rate = [r for r in records if r["config"]["train"]["lr"] != 3e-3 or r["config"]["architecture"]["name"] != "gla"]
    searched = {"rates": [1e-3, 3e-3], "rung": 0}
    for r in missing_rate:  # a group whose search tried a rate it has not recorded is held back
        r["metrics"]["search"] = searched
    assert ladder.choose(missing_rate, groups, "learned") is None


def test_each_rung_trains_on_its_setting_and_its_rule_reads_the_rung_below():
    def settings(overrides):
        configs = bench.expand([f"preset={o}" if i == 0 else o for i, o in enumerate(overrides.split())])
        return {(c["task"]["seq_len"], c["task"]["num_kv_pairs"], c["task"]["vocab_size"]) for c in configs}

    assert settings("published_ladder") == {(128, 32, 256)}
    assert settings("published_ladder_l256") == {(256, 64, 512)}
    assert settings("published_ladder_top") == {(512, 128, 1024)}
    below = {rung.preset: rung.below for rung in ladder.RUNGS}
    assert below == {"published_ladder_l256": "published_ladder", "published_ladder_top": "published_ladder_l256"}
    for rung in ladder.RUNGS:  # the rung below's preset trains the task its rule reads
        assert settings(rung.below) == settings(f"{rung.below} task={rung.below_task}")
    with pytest.raises(ValueError, match="rule"):
        ladder.passes(None, "half")


def test_the_published_presets_list_what_their_rule_picks_from_the_published_store():
    lines, agree = ladder.report(ROOT / "results")
    landed = [line for line in lines if ": not landed (" not in line]
    if not landed:
        pytest.skip("no rung below an upper rung has landed whole in results/ yet: " + "; ".join(lines))
    assert agree, "\n".join(lines)


def test_the_command_names_a_store_without_records_and_exits_2(tmp_path, capsys):
    assert ladder.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "store_dir" in err and "records/" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()
    assert ladder.main(["results", "more"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("store_dir: one store at most, got 2") and len(err.strip().splitlines()) == 1


def test_the_command_says_which_preset_to_set_when_a_rung_below_has_landed(tmp_path, capsys):
    # the rung below (published_ladder's L 128, kv 32) landed: every group of its plan, learned by GLA alone
    store = tmp_path / "store"
    (store / "records").mkdir(parents=True)
    configs = bench.expand(["preset=published_ladder"])
    for group in configs:
        for run in bench.grid_runs(group)[:1]:
            mixer = run["architecture"]["name"]
            record = valid_record(run, accuracy=0.6 if mixer == "gla" else 0.03)
            record["metrics"]["task"].update(seq_len=128, memory_demand=32, no_recall_accuracy=1 / 32)
            (store / "records" / f"{record['key']}.json").write_text(json.dumps(record))
    assert ladder.main([str(store)]) == 1  # published_ladder_l256 lists every mixer, the rule only GLA
    out = capsys.readouterr().out
    assert "published_ladder_l256: " in out and ": gla; the preset lists attention" in out and "set it to these" in out
