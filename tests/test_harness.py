"""End to end on the smoke preset: train, measure, record, leaderboard."""

import json

import pandas as pd
import pytest
import torch

from benchmarks import bench
from benchmarks.ess import effective_state_size, model_ess
from benchmarks.run import build_model, build_task, run_one
from benchmarks.store import Store


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    assert bench.main(["preset=smoke", f"store={root}", "progress=false"]) == 0
    return root


@pytest.mark.e2e
def test_smoke_sweep_writes_records_and_leaderboard(smoke_store):
    records = Store(smoke_store).records()
    names = sorted(r["config"]["architecture"]["name"] for r in records)
    assert names == sorted(["attention", "gla", "lru", "mamba"] * 2)  # each at both rates of the smoke grid
    assert len({r["group"] for r in records}) == 4
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    for r in records:
        m = r["metrics"]
        assert 0.0 <= m["accuracy"] <= 1.0
        assert m["ess"]["ess_max"] <= m["tss"]  # ESS of the trained model never above TSS
        assert len(m["ess"]["ess_curve"]) == r["config"]["task"]["seq_len"]
        assert m["cache_bytes"] > 0
        # MQAR trains in Zoology's model: the record names it, and keeps the BaseConv layer's ESS (<= its
        # kernel - 1), its state among every layer's and its cache (k - 1 past inputs per channel)
        assert r["config"]["model"]["backbone"] == m["backbone"] == "zoology"
        if r["config"]["architecture"]["name"] != "mamba":  # mamba carries its own convolution: no BaseConv
            assert m["conv_ess"]["ess_max"] <= 2 and m["tss_by_layer"][0] == 2
            assert m["cache_bytes_per_layer"][0] == 2 * r["config"]["model"]["d_model"] * 4  # 2 fp32 inputs per channel
        else:
            assert m["conv_ess"] is None and len(m["tss_by_layer"]) == 2
        # the time split adds up to no more than the run's wall time and names where it went
        parts = m["seconds"]
        assert set(parts) == {"steps", "evaluation", "ess_over_training", "final_ess"}
        assert all(v >= 0 for v in parts.values()) and parts["steps"] > 0
        assert sum(parts.values()) <= r["wall_time_s"] + 0.1
        for field in ("commit", "dirty", "device", "cpu", "versions"):
            assert field in r["provenance"]
    plan = json.loads((smoke_store / "plans" / "smoke.json").read_text())  # the page's planned-vs-done count
    assert sorted(plan["keys"]) == sorted(r["key"] for r in records)
    board = (smoke_store / "leaderboard.md").read_text()
    assert "smoke: 8 of 8 planned runs" in board
    for column in ("accuracy", "no-recall baseline", "learned", "val accuracy", "lr", "ESS", "entropy ESS", "TSS", "state use"):
        assert f"| {column} |" in board
    assert "## mqar" in board and "Verdict" in board and "Tolerance sensitivity" in board
    assert "Where a run's time goes" in board and "steps share" in board
    assert "attention" in board and "mamba" in board
    csv = pd.read_csv(smoke_store / "leaderboard.csv")
    for column in ("commit", "device", "cpu", "seed", "lr_grid", "grid_spread", "kernels", "key"):
        assert column in csv.columns
    assert csv["cpu"].notna().all()  # every fresh record names its CPU
    assert (smoke_store / "leaderboard.csv").exists()


@pytest.mark.e2e
def test_second_sweep_skips_recorded_runs(smoke_store, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in (smoke_store / "records").glob("*.json")}
    assert bench.main(["preset=smoke", f"store={smoke_store}", "progress=false"]) == 0
    assert "8 already recorded" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (smoke_store / "records").glob("*.json")}
    assert before == after


@pytest.mark.e2e
def test_trained_model_ess_never_above_state_size(smoke_store):
    record = next(r for r in Store(smoke_store).records() if r["config"]["architecture"]["name"] == "mamba")
    cfg = record["config"]
    task = build_task(cfg["task"])
    model = build_model(cfg, task)
    x, _ = task.generate(2, seed=5)
    for layer in model_ess(model, x):
        assert layer.tolerance.max() <= layer.tss
    for mixer in model.mixers:
        h = torch.randn(2, task.seq_len, cfg["model"]["d_model"])
        assert effective_state_size(mixer.operator(h).matrix).max() <= mixer.state_size(task.seq_len)


@pytest.mark.e2e
def test_records_show_the_task_parameters_their_level_set(smoke_store, tmp_path):
    cfg = json.loads(json.dumps(next(iter(Store(smoke_store).records()))["config"]))
    cfg.update(store=str(tmp_path))
    cfg["task"].update(level=1, num_kv_pairs=3, seq_len=32, vocab_size=256)  # level 1 is (L 64, kv 8)
    cfg["train"]["steps"] = 2
    record = run_one(cfg)
    assert record["config"]["task"]["level"] == 1
    assert (record["config"]["task"]["seq_len"], record["config"]["task"]["num_kv_pairs"]) == (64, 8)
    assert record["metrics"]["task"]["num_kv_pairs"] == 8


def test_provenance_names_the_cpu_the_kernels_are_compiled_for(monkeypatch):
    """Runs of one config on CPUs of other flags round differently (the C kernels are built with
    -march=native): a record's `cpu` must tell two such machines apart, and name the model."""
    from architectures import cpu_kernels
    from benchmarks import provenance

    def on(flags):
        monkeypatch.setattr(cpu_kernels, "cpu_identity", lambda: f"flags\t\t: {flags}\nmodel name\t: Some CPU")
        provenance.cpu.cache_clear()
        return provenance.cpu()

    try:
        avx2, avx512 = on("fpu sse2 avx2"), on("fpu sse2 avx2 avx512f")
    finally:
        provenance.cpu.cache_clear()  # later records in this process name the real CPU
    assert avx2["model"] == avx512["model"] == "Some CPU"
    assert avx2["identity"] != avx512["identity"]
    assert avx512["capability"] == torch.backends.cpu.get_cpu_capability()


def test_cpu_training_steps_reuse_freed_memory_instead_of_page_faulting():
    """After `keep_freed_memory` (which `benchmarks.train.train` applies on CPU), a warmed-up training
    step of the CPU presets' Mamba model takes its activations from memory malloc kept: it must not
    page-fault them back in (thousands of minor faults per step under glibc's defaults)."""
    resource = pytest.importorskip("resource")
    from benchmarks.perf.train_step import build, step
    from benchmarks.train import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc: malloc's options are not set")
    model, opt, x, y = build("mamba")  # the presets' shape, batch 32
    for _ in range(5):  # the heap grows to its working size
        step(model, opt, x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step(model, opt, x, y)
    # measured: 0-200 faults per step (a rare step still grows the heap); glibc's defaults ~950 here,
    # ~3,400-4,000 at first and after other models ran in the process
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10 < 500
