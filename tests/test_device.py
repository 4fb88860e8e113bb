"""The prepared GPU job (benchmarks.device): its dry run end to end on the CPU, its usage errors,
and the check that it imports nothing the GPU machine lacks."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from architectures import registry
from benchmarks import device
from benchmarks.store import load_record

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_dry_run_returns_ceilings_throughput_and_training_records_in_at_most_8_files(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.device", "--out", str(out), "--dry-run", "--seed-store", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 1 <= len(files) <= device.MAX_FILES, files
    assert all(p.parent == out and p.stat().st_size <= device.MAX_FILE_BYTES for p in files)
    assert {"summary.json", "log.txt", "records.tar.gz"} <= {p.name for p in files}

    store = tmp_path / "store"
    for tar in out.glob("records*.tar.gz"):
        with tarfile.open(tar) as t:
            t.extractall(store, filter="data")
    parts = {"throughput": "throughput/records", "train": "records"}
    records = {kind: [load_record(p) for p in sorted((store / sub).glob("*.json"))] for kind, sub in parts.items()}
    records["ceilings"] = [json.loads(p.read_text()) for p in (store / "ceilings").glob("*.json")]
    (ceilings,) = records["ceilings"]
    assert ceilings["metrics"]["matmul_flops_per_s"] > 0 and ceilings["metrics"]["copy_bytes_per_s"] > 0
    ok = [r for r in records["throughput"] if r["status"] == "ok"]
    assert ok, [r.get("error") for r in records["throughput"]]
    assert all(r["metrics"]["ceilings_key"] == ceilings["key"] for r in ok)
    assert all(0 < r["metrics"]["forward_fraction_of_copy_ceiling"] for r in ok)
    # the clock decides how far down the mixers a loaded CPU gets (each mixer's throughput: test_throughput.py);
    # the first is always measured, and every mixer at the first length is measured or listed as not measured
    assert "attention" in {r["metrics"]["mixer"] for r in ok}
    trained = [r for r in records["train"] if r["status"] == "ok"]
    assert trained, [r.get("error") for r in records["train"]]
    assert all(r["config"]["device"] == "cpu" and r["provenance"]["device_type"] == "cpu" for r in trained)
    assert {r["config"]["train"]["batch_size"] for r in trained} == {16}  # the dry run's overrides reached run_one

    summary = json.loads((out / "summary.json").read_text())
    assert summary["throughput"]["failed"] == []
    accounted = summary["throughput"]["ok"] + summary["throughput"]["not_measured"]
    assert {what.split()[0] for what in accounted if what.endswith("L=32")} == set(registry.names())
    assert summary["imports_missing_on_gpu"] == []  # else: add their wheels to device.WHEELS
    assert summary["records_packed"] == sum(len(v) for v in records.values())
    assert summary["job"]["elapsed_s"] < 120


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([], "--out"),
        (["--out", "{tmp}/o", "--minutes", "0"], "--minutes"),
        (["--out", "{tmp}/o", "--minutes", "soon"], "--minutes"),
        (["--out", "{tmp}/o", "--dry-run", "--workers", "0"], "--workers"),
        (["--out", "{tmp}/o", "--dry-run", "--throughput-share", "1.5"], "--throughput-share"),
        (["--out", "{tmp}/o", "--dry-run", "--phases", "train,bench"], "--phases"),
        (["--out", "{tmp}/o", "--dry-run", "--priority", "{tmp}/missing.yaml"], "--priority"),
        (["--out", "{tmp}/o", "--dry-run", "--into", "{tmp}/s"], "--into"),
        (["--out", "{tmp}/o", "--unpack", "{tmp}"], "--unpack"),
        (["--out", "{tmp}/o", "--dry-run", "--bogus"], "--bogus"),
    ],
)
def test_usage_errors_exit_2_with_one_line_naming_the_flag_and_write_nothing(tmp_path, capsys, argv, flag):
    args = [a.format(tmp=tmp_path) for a in argv]
    assert device.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "--help" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_out_or_a_cpu_without_dry_run_is_refused(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert device.main(["--out", str(tmp_path), "--dry-run"]) == 2
    assert "not empty" in capsys.readouterr().err
    if not device.torch.cuda.is_available():
        assert device.main(["--out", str(tmp_path / "new")]) == 2
        assert "--dry-run" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()


def test_the_cli_exits_2_on_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.device", "--out", str(tmp_path / "o"), "--minutes", "-1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "--minutes" in proc.stderr and not (tmp_path / "o").exists()


def test_the_priority_list_composes_into_zoologys_protocol(tmp_path):
    args = device.parse_args(["--out", str(tmp_path / "o"), "--dry-run", "--seed-store", ""])
    args.dry_run = False  # the GPU job's configs, composed on this CPU
    job = device.Job(args, device.ImportAudit())
    try:
        runs, problems = device.compose_runs(job)
    finally:
        shutil.rmtree(job.work)
    assert problems == []
    first = runs[0]
    assert first["architecture"]["name"] == "mamba" and first["architecture"]["d_state"] == 16  # state 1
    assert (first["task"]["seq_len"], first["task"]["num_kv_pairs"], first["task"]["vocab_size"]) == (64, 4, 8192)
    assert (first["train"]["batch_size"], first["data"]["num_train"], first["train"]["solved_accuracy"]) == (512, 100000, 0.99)
    assert [r["train"]["lr"] for r in runs[:4]] == [1e-4, 4.6e-4, 2.2e-3, 1e-2]
    assert first["model"]["backbone"] == "zoology" and first["device"] == "cuda" and "state" not in first


def test_the_import_audit_names_what_the_suite_imports_beyond_the_gpu_image():
    audit = device.ImportAudit()
    sys.meta_path.insert(0, audit)
    try:
        for importer in ("benchmarks.newthing", "some_library"):
            with pytest.raises(ImportError):
                exec("import not_on_the_gpu_machine_xyz", {"__name__": importer})
        exec("import hydra, torch, json", {"__name__": "benchmarks.newthing"})
    finally:
        sys.meta_path.remove(audit)
    assert audit.missing == {"not_on_the_gpu_machine_xyz (imported by benchmarks.newthing)"}


def test_packing_splits_records_that_would_pass_the_file_limit(tmp_path, monkeypatch):
    root = tmp_path / "store" / "records"
    root.mkdir(parents=True)
    for i in range(6):
        (root / f"{i}.json").write_bytes(os.urandom(4000))  # incompressible
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(device, "MAX_FILE_BYTES", 10_000)
    files = sorted(root.glob("*.json"))
    written = device.pack_records(root.parent, files, out, max_parts=6)
    assert len(written) > 1 and all(p.stat().st_size <= 10_000 for p in written)
    names = set()
    for p in written:
        with tarfile.open(p) as t:
            names |= set(t.getnames())
    assert names == {f"records/{i}.json" for i in range(6)}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temporary files left
