"""Every command of the suite: `--help` prints its usage and exits 0; a bad argument (an unknown key, a
value of the wrong type) exits 2 with one line naming it, before any work and with nothing written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# command -> a bad argument list and what the one line must name
BAD = {
    "bench": (["train.steps=abc"], "train.steps"),
    "run": (["architecture=lru", "architecture.d_stat=4"], "architecture.d_stat"),
    "leaderboard": (["--bogus"], "--bogus"),
    "review": (["architecture=lru", "bogus=1"], "bogus"),
    "relabel": (["store", "--solved-accuracy", "high"], "--solved-accuracy"),
    "throughput": (["lengths=a"], "lengths"),
    "conformance": (["architecture=lru", "size=4"], "size=4"),
    "device": (["--out", "out", "--minutes", "soon"], "--minutes"),
    "screenshots": (["--widths", "wide", "page.html"], "--widths"),
}


def _command(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(BAD))
def test_help_exits_0_and_a_bad_argument_exits_2_with_one_line(name, tmp_path):
    shown = _command(name, ["--help"], tmp_path)
    assert shown.returncode == 0 and shown.stdout.lower().startswith("usage:"), shown.stdout + shown.stderr
    args, named = BAD[name]
    bad = _command(name, args, tmp_path)
    line = bad.stderr.strip()
    assert bad.returncode == 2 and named in line and "\n" not in line and "Traceback" not in line, bad.stderr
    assert not list(tmp_path.iterdir()), "a usage error wrote something"
