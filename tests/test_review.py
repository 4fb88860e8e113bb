"""Design review of an out-of-tree mixer, end to end on the smoke preset; conformance rejections."""

import pytest
import torch

from benchmarks import bench, review, throughput
from benchmarks.config import ConfigError
from benchmarks.conformance import ConformanceError, check_mixer
from benchmarks.run import run_one
from benchmarks.store import Store

SECTIONS = (
    "## Conformance",
    "## Where it stands",
    "## Runs",
    "## ESS curves beside the nearest reference designs",
    "## State utilization",
    "## Accuracy per difficulty",
    "## Throughput scaling",
    "## Reproduce",
)


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    assert bench.main(["preset=smoke", f"store={root}", "progress=false", "architecture=attention,gla"]) == 0
    return root


@pytest.mark.e2e
def test_example_mixer_review_has_every_section(reference_store, tmp_path, monkeypatch):
    args = [
        "architecture=examples.gated_ema:GatedEMA",
        "preset=smoke",
        f"reference={reference_store}",
        f"out={tmp_path}",
        "lengths=32,64",
        "progress=false",
    ]
    assert review.main(args) == 0
    (folder,) = tmp_path.iterdir()
    assert folder.name == "gated_ema"  # reviews/<mixer>/, named by the mixer's own name
    md = (folder / "report.md").read_text()
    for section in SECTIONS:
        assert section in md, section
    assert "passes all 25 conformance checks" in md
    stands = md.split("## Where it stands")[1].split("## Runs")[0]
    table = [line for line in stands.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| mixer | rank | accuracy | no-recall baseline | lr | steps | stopped | ESS | TSS |")
    assert "| cache bytes | fwd+bwd tok/s | decode tok/s | note |" in table[0]
    mixers = {line.split(" | ")[0].strip("| ") for line in table[1:]}
    assert mixers == {"examples.gated_ema:GatedEMA", "attention", "gla"}  # beside both reference mixers of the same protocol
    for line in table[1:]:  # throughput measured for every mixer of the table, in this process
        assert line.split(" | ")[-3].strip() and line.split(" | ")[-2].strip(), line
    curves = md.split("## ESS curves beside the nearest reference designs")[1].split("##")[0]
    assert "attention (" in curves and "gla (" in curves  # and its ESS curve set beside theirs
    use = md.split("## State utilization")[1].split("##")[0]
    assert "| state use |" in use and any(f"| {v} |" in use for v in ("neither", "saturated", "collapsed"))
    assert "python -m benchmarks.review architecture=examples.gated_ema:GatedEMA" in md
    page = (folder / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert "<table" in page and 'class="reviewed' in page  # rendered tables, the reviewed mixer's row highlighted
    for raw in ("|---", "**", "!["):
        assert raw not in page, raw
    for section in SECTIONS:
        assert section.removeprefix("## ") in page
    records = Store(folder).records()
    assert len(records) == 2  # the smoke preset's two learning rates
    for record in records:
        assert record["status"] == "ok" and record["metrics"]["ess"]["ess_max"] <= record["metrics"]["tss"]
    # the report's throughput commands (its length ladder; the comparison's lengths) name exactly the
    # measurements it holds: rerun, they find them all
    commands = [line for line in md.splitlines() if line.startswith("python -m benchmarks.throughput")]
    assert len(commands) == 2
    measured = []
    monkeypatch.setattr(throughput, "measure_mixer", lambda *a, **k: measured.append(a))
    for command in commands:
        assert throughput.main(command.split()[3:]) == 0 and measured == []


@pytest.mark.e2e
def test_a_review_whose_runs_all_diverge_says_so_and_exits_non_zero(reference_store, tmp_path, capsys):
    args = ["architecture=nan_mixer:NaNMixer", "preset=smoke", f"reference={reference_store}", f"out={tmp_path}",
            "lengths=32", "progress=false", "architecture.lr_grid=[1e-3]"]  # fmt: skip
    assert review.main(args) == 1
    assert "no run of nan_mixer:NaNMixer succeeded" in capsys.readouterr().err
    md = next(tmp_path.iterdir()).joinpath("report.md").read_text()
    assert "No run of nan_mixer:NaNMixer succeeded" in md and "1 of 1 runs failed or diverged" in md
    assert "non-finite" in md.split("## Runs")[1] or "nan" in md.split("## Runs")[1].lower()


def test_a_review_without_its_reference_store_names_the_preset_that_builds_it(tmp_path, capsys):
    args = ["architecture=examples.gated_ema:GatedEMA", "preset=smoke", f"reference={tmp_path / 'none'}", f"out={tmp_path}"]
    assert review.main(args) == 2
    err = capsys.readouterr().err
    assert "no reference records" in err and "python -m benchmarks.bench preset=smoke" in err
    assert not list(tmp_path.glob("*/records"))  # nothing trained


def test_broken_example_is_rejected_naming_the_check_and_the_error(tmp_path):
    report = check_mixer("examples.broken_mixer:BrokenOperator")
    assert not report.passed
    (fail, *_) = report.failures()
    assert fail.name == "reproduces"
    assert "max |matrix @ inputs - outputs| = 0.2" in fail.detail
    with pytest.raises(ConformanceError, match=r"\[FAIL\] reproduces: max \|matrix @ inputs - outputs\| = "):
        review.main(["architecture=examples.broken_mixer:BrokenOperator", "preset=smoke", f"out={tmp_path}", "progress=false"])


@pytest.mark.e2e
def test_out_of_tree_mixer_is_checked_on_entry_to_a_run(tmp_path, reference_store):
    cfg = dict(next(iter(Store(reference_store).records()))["config"])
    cfg.update(store=str(tmp_path), architecture={"name": "examples.broken_mixer:BrokenOperator"})
    with pytest.raises(ConfigError, match="fails conformance.*reproduces"):
        run_one(cfg)
    assert not Store(tmp_path).records()  # rejected before training: no record


class NoOperator(torch.nn.Module):
    """Has forward only: conformance must list every other missing piece."""

    def forward(self, x):
        return x

    def __init__(self, d_model):
        super().__init__()


@pytest.mark.parametrize(
    "factory, check, text",
    [
        (NoOperator, "interface", "missing operator, state_size, init_state, step"),
        ("examples.gated_ema:Nope", "build", "cannot load mixer class"),
    ],
)
def test_missing_pieces_are_named(factory, check, text):
    report = check_mixer(factory)
    (fail,) = report.failures()
    assert fail.name == check and text in fail.detail


def test_every_reference_mixer_conforms():
    from architectures import registry

    for name in registry.names():
        report = check_mixer(name)
        assert report.passed, report.message()


@pytest.mark.e2e
def test_target_syntax_builds_an_out_of_tree_mixer(tmp_path, reference_store):
    cfg = dict(next(iter(Store(reference_store).records()))["config"])
    cfg.update(store=str(tmp_path), architecture={"_target_": "examples.gated_ema.GatedEMA", "num_scales": 2})
    record = run_one(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["metrics"]["tss"] == 2


def test_a_linear_mixer_whose_channel_operator_is_not_its_jacobian_fails_conformance(monkeypatch):
    from architectures.lru import LRU

    report = check_mixer("lru")
    assert [c for c in report.checks if c.name == "jacobian"] and report.passed
    real = LRU.impulse_response
    monkeypatch.setattr(LRU, "impulse_response", lambda self, length: 1.1 * real(self, length))
    report = check_mixer("lru")
    failed = {c.name for c in report.failures()}
    assert "jacobian" in failed, report.message()


@pytest.mark.e2e
def test_a_review_under_another_budget_is_not_ranked_against_the_reference(reference_store, tmp_path):
    """The reference rows were trained with the smoke preset's budget; a review trained longer is a
    different protocol, so its table holds none of them, only the mixer under review."""
    args = ["architecture=examples.gated_ema:GatedEMA", "preset=smoke", "train.steps=40", f"reference={reference_store}",
            f"out={tmp_path}", "lengths=32", "progress=false", "architecture.lr_grid=[3e-3]"]  # fmt: skip
    assert review.main(args) == 0
    md = (tmp_path / "gated_ema" / "report.md").read_text()
    stands = md.split("## Where it stands")[1].split("## Runs")[0]
    rows = [line for line in stands.splitlines() if line.startswith("| ") and not line.startswith("| mixer")]
    assert len(rows) == 1 and rows[0].startswith("| examples.gated_ema:GatedEMA |")
    assert "(0 reference rows" not in stands
    curves = md.split("## ESS curves beside the nearest reference designs")[1].split("##")[0]
    assert "no reference runs under this protocol" in curves and "attention (" not in curves


def test_ranks_count_only_rows_that_learned_and_rows_within_the_tie_share_one():
    import pandas as pd

    acc = pd.Series([0.995, 0.985, 0.962, 0.5, 0.2])
    ranks = review._rank(acc, pd.Series([True, True, True, True, False]))
    assert list(ranks) == ["1=", "1=", "3", "4", "not learned"]  # 0.995 and 0.985: 0.01 apart, one rank


def test_a_row_is_noted_below_the_baseline_only_beyond_sampling_noise():
    row = {"tss": 8, "memory_demand": 8, "no_recall": 0.125}
    assert review._notes({**row, "accuracy": 0.083, "learned": "below baseline"}) == "below the no-recall baseline"
    assert review._notes({**row, "accuracy": 0.120, "learned": "not learned"}) == ""  # 0.005 under it: noise


def _tp_record(mixer: str, length: int, fwd_bwd: float, times=(1.0, 1.0, 1.0, 1.0)) -> dict:
    """A throughput record of `mixer` at `length`, `fwd_bwd` tokens/s forward + backward."""
    metrics = {"mixer": mixer, "seq_len": length, "kernel": "reference", "batch": 4, "forward_tokens_per_s": 2 * fwd_bwd,
               "forward_backward_tokens_per_s": fwd_bwd, "prefill_tokens_per_s": 2 * fwd_bwd, "decode_tokens_per_s": 1e4,
               "forward_s": 4 * length / (2 * fwd_bwd), "peak_memory_bytes": 2**20, "forward_flops_per_s": 1e9,
               "forward_times_s": list(times), "forward_backward_times_s": list(times)}  # fmt: skip
    return {"status": "ok", "metrics": metrics, "provenance": {"device": "cpu", "commit": "0" * 40}, "measured_at": "x"}


def test_throughput_beyond_the_noise_is_flagged_and_no_exponent_is_fitted_through_it():
    steady = [_tp_record("lru", n, 1e5) for n in (64, 128, 256)]
    jumpy = [_tp_record("gated", 64, 26e3), _tp_record("gated", 128, 7.7e3), _tp_record("gated", 256, 7.5e3)]
    spread = [_tp_record("wide", 64, 1e5, times=(1, 1, 1, 4, 4, 4))]
    flags = review.unsteady_throughput(steady + jumpy + spread)
    assert set(flags) == {("gated", 128), ("wide", 64)}
    assert "from L 64" in flags[("gated", 128)] and "repeats spread 4.0x" in flags[("wide", 64)]
    tp, scaling, lines = review._throughput(steady + jumpy, flags)
    fitted = scaling.set_index("mixer")
    assert fitted.loc["gated", "forward ~ L^"] != fitted.loc["gated", "forward ~ L^"]  # NaN: not fitted
    assert "not fitted" in fitted.loc["gated", "note"] and abs(fitted.loc["lru", "forward ~ L^"] - 1) < 1e-6
    assert any("gated at L 128" in line for line in lines)


def test_the_report_opens_with_the_verdict_and_highlights_the_reviewed_row(tmp_path):
    from record_factory import CONFIG, valid_record

    from benchmarks.conformance import Report

    def record(mixer, accuracy, ess=2.0):
        r = valid_record({**CONFIG, "architecture": {"name": mixer}}, accuracy=accuracy)
        r["metrics"]["ess"]["ess_mean_by_tolerance"] = {"operator:0.01": ess}
        return r

    name = "examples.gated_ema:GatedEMA"
    refs = [record("attention", 0.99, 3.0), record("lru", 0.9, 1.0), record("hyena", 0.2)]
    tp = [_tp_record(m, 32, 1e5) for m in (name, "attention", "lru", "hyena")]
    md_path, html_path = review.build_report(name, Report(name), [record(name, 0.2)], refs, tp, tmp_path, ["cmd"], "ref")
    md, page = md_path.read_text(), html_path.read_text()
    first = md.split("## Where it stands")[0]
    assert f"{name} learned 0 of the 1 settings" in first and "2 of the 3 reference mixers did" in first
    assert "ESS 2.00 against the references' median 2.00 (1.00-3.00)" in first and "TSS 4 against 4" in first
    assert "content-based lookup" in first  # why a mixer without one is expected not to learn MQAR
    assert page.index("learned 0 of the 1 settings") < page.index("<table")  # the verdict before any table
    assert page.count('class="reviewed not-learned"') == 1 and f'<td class="text" data-value="{name}">' in page
