"""Bad input and a shared store: unreadable records, concurrent sweeps, wrong shapes, empty paths,
exit codes. Each bad input gets one line, a non-zero exit and nothing written."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench
from benchmarks.run import run_one
from benchmarks.store import Store, run_key

ROOT = Path(__file__).resolve().parent.parent
ONE_RUN = ["preset=smoke", "architecture=lru", "architecture.lr_grid=[1e-3]", "train.steps=4", "progress=false"]


def _the_run(store: Path) -> tuple[dict, Path]:
    (cfg,) = bench.plan([*ONE_RUN, f"store={store}"])
    return cfg, Store(store).path(run_key(cfg))


@pytest.mark.e2e
@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage\x81", b'{"garbage": ', b'{"key": "x", "status": "ok"}', b"[1, 2, 3]"],
    ids=["not-utf8", "truncated", "not-a-record", "not-an-object"],
)
def test_an_unreadable_record_is_set_aside_named_and_its_run_trained_again(tmp_path, capsys, content):
    cfg, path = _the_run(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert bench.main([*ONE_RUN, f"store={tmp_path}"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(path) in warnings[0] and "trained again" in warnings[0]
    assert (tmp_path / "records" / "corrupt" / path.name).read_bytes() == content  # kept, not deleted
    assert Store(tmp_path).read(path.stem)["status"] == "ok"  # the run was trained again
    assert "1 record file could not be read" in (tmp_path / "leaderboard.md").read_text()


def test_a_run_another_process_is_training_is_not_trained_twice(tmp_path):
    cfg, path = _the_run(tmp_path)
    store = Store(tmp_path)
    with store.claim(path.stem) as mine:
        assert mine
        record = run_one(cfg, check=False)
        assert record["status"] == "claimed" and not path.exists()
    assert not list((tmp_path / "records").glob(".*.claim"))  # released
    # a claim left by a process that died is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "records" / f".{path.stem}.claim").write_text(f"{socket.gethostname()} {dead.stdout.strip()} 0")
    assert run_one(cfg, check=False)["status"] == "ok"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()  # readable by the others on a shared store


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_empty_store_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bench.main(["preset=smoke", "store=", "progress=false"]) == 2
    assert "store: empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_wide_error_is_not_pinned_on_one_run(tmp_path, capsys):
    assert bench.main(["preset=smoke", f"store={tmp_path}", "train.steps=-1"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("configuration error: train.steps") and "[" not in line
    assert not (tmp_path / "records").exists()


@pytest.mark.parametrize("cls", ["ShortOutput", "WideOutput"])
def test_a_mixer_with_the_wrong_output_shape_fails_conformance_naming_the_shape(tmp_path, capsys, cls):
    assert bench.main(["preset=smoke", f"store={tmp_path}", f"architecture=nan_mixer:{cls}"]) == 2
    line = capsys.readouterr().err.strip()
    assert "fails conformance (shape: forward output" in line and "expected (2, 24, 32)" in line
    assert "\n" not in line and not tmp_path.joinpath("records").exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_exit_codes_and_nothing_left_in_the_working_directory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    failed = _cli("benchmarks.run", "preset=smoke", "architecture=nan_mixer:NaNMixer", f"store={tmp_path / 's'}",
                  "progress=false", cwd=work)  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-2000:]  # one run, and it failed (NaN while training)
    assert "[failed]" in failed.stdout
    refused = _cli("benchmarks.run", "train.steps=-1", f"store={tmp_path / 's'}", cwd=work)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("configuration error: train.steps")
    unknown = _cli("benchmarks.throughput", "mixers=nosuch", cwd=work)
    assert unknown.returncode == 2 and "unknown mixer 'nosuch'" in unknown.stderr
    assert list(work.iterdir()) == []  # no runs/hydra/<timestamp>/: Hydra writes nothing of its own
