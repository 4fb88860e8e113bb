"""A newcomer's first commands: `nox -s bench` trains the default preset into an ignored store and checks
itself against the committed reference; the README's commands leave `git status` clean; committed pages
are what their committed records draw."""

import contextlib
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import bench, leaderboard
from benchmarks.store import Store

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / bench.REFERENCES["default"]
# committed pages held to a rebuild of their committed records (the published page joins once its re-run lands)
PAGES = [REFERENCE]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _in_git() -> bool:
    return shutil.which("git") is not None and _git("rev-parse", "--is-inside-work-tree").stdout.strip() == "true"


needs_git = pytest.mark.skipif(not _in_git(), reason="needs git and a clone of the repository")


@needs_git
def test_every_path_the_readme_commands_write_is_ignored():
    store = bench.plan([])[0]["store"]  # nox -s bench: preset=default
    written = [
        f"{store}/records/0123456789abcdef.json", f"{store}/index.html", f"{store}/leaderboard.md", f"{store}/figures/a.png",
        "reviews/gated_ema/report.html", "reviews/gated_ema/records/0123456789abcdef.json",  # nox -s review
        "runs/page/index.html", "runs/page/screenshots/page-index-1400px.png",  # nox -s page
        ".nox/tests/bin/python", ".pytest_cache/v/cache/lastfailed", "outputs/2026-01-01/run.log", ".benchmarks/perf.json",
    ]  # fmt: skip
    not_ignored = [p for p in written if _git("check-ignore", "-q", "--no-index", p).returncode != 0]
    assert not not_ignored, f"tracked or untracked, not ignored: {not_ignored}"
    assert Path(store).parts[0] == "runs"
    assert _git("ls-files", str(REFERENCE / "records")).stdout.strip(), "the default preset's reference is committed"


def test_the_reproduction_check_prints_every_row_and_one_verdict():
    reference = Store(REFERENCE).records()
    lines = bench.compare(reference, reference, "results/default")
    rows = [line for line in lines if re.search(r"L=64, kv=[48]\s", line)]
    assert len(rows) == 20  # 10 mixers x 2 settings, each its best rate on validation
    assert all("+0.000" in row for row in rows)
    assert lines[-1].startswith("reproduced within seed noise: all 20 rows compared")

    moved = copy.deepcopy(reference)
    for r in moved:
        r["config"]["train"]["cooldown"] = 0.1  # a key the reference's records predate
        if r["config"]["architecture"]["name"] == "hyena" and r["config"]["task"]["num_kv_pairs"] == 8:
            r["metrics"]["accuracy"] += 2 * bench.ACCURACY_NOISE
    lines = bench.compare(moved, reference, "results/default")
    assert any(line.startswith("hyena") and "outside seed noise" in line for line in lines)
    assert any("differ in train.cooldown" in line for line in lines)
    assert lines[-1].startswith("not reproduced within seed noise: 1 of 20 rows") and "hyena L=64, kv=8" in lines[-1]


def _normalized(text: str, store: Path) -> str:
    """A page without its store's path (it names where it was built) and its figures' bytes (fonts rasterize
    differently between machines; the figures' code is held by tests of its own)."""
    name = str(store.relative_to(ROOT)) if store.is_relative_to(ROOT) else str(store)
    text = re.sub(rf"(?<![\w/]){re.escape(name)}(?![\w])", "<store>", text)  # not inside a record's own path
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,…", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_committed_page_equals_a_rebuild_of_its_committed_records(page, tmp_path):
    built = tmp_path / "store"
    for part in ("records", "plans", "throughput"):
        if (page / part).is_dir():
            shutil.copytree(page / part, built / part, ignore=shutil.ignore_patterns(".*"))
    leaderboard.build(built)
    for name in ("leaderboard.md", "leaderboard.csv", "index.html"):
        committed = _normalized((page / name).read_text(), page)
        rebuilt = _normalized((built / name).read_text(), built)
        assert committed == rebuilt, (
            f"{page.relative_to(ROOT)}/{name} is not what its records draw now: rebuild it with "
            f"`python -m benchmarks.leaderboard {page.relative_to(ROOT)}` and commit it"
        )


def _new_entries(before: set[str], after: set[str]) -> set[str]:
    """`git status --porcelain` lines that appeared, less those of other work in progress meanwhile: source
    edited (a sweep writes no Python) and stores another sweep is writing (its records folder holds claims)."""

    def elsewhere(line: str) -> bool:
        path = ROOT / line[3:].strip()
        return path.suffix == ".py" or (path.parent.is_dir() and any(path.parent.glob(".*.claim")))

    return {line for line in after - before if not elsewhere(line)}


@needs_git
@pytest.mark.e2e
def test_a_bench_into_an_ignored_store_leaves_the_tree_clean_and_checks_itself(tmp_path):
    status = ["status", "--porcelain", "--untracked-files=all"]
    before = set(_git(*status).stdout.splitlines())
    reference = tmp_path / "reference"
    had_runs = (ROOT / "runs").exists()
    store = ROOT / "runs" / f"test-newcomer-{os.getpid()}-{time.time_ns()}"  # where `nox -s bench` writes: runs/
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        for where, extra in ((reference, ["workers=2", "reference="]), (store, [f"reference={reference}"])):
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench", "preset=smoke", f"store={where}", "progress=false", *extra],
                cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stdout
        assert re.search(r"\[8/8\] \w+ .*mqar L=32, kv=4 lr=0\.00\d: accuracy .*; .* so far, ~.* left", out), out
        assert "reproduction check against" in out
        assert re.search(r"^(reproduced|not reproduced) within seed noise: .*4 rows", out, re.M), out
        assert not _new_entries(before, set(_git(*status).stdout.splitlines()))
    finally:
        shutil.rmtree(store, ignore_errors=True)
        if not had_runs:
            with contextlib.suppress(OSError):  # only if empty: another command may have written there meanwhile
                (ROOT / "runs").rmdir()
