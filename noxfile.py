"""Sessions: `nox -s tests`, `nox -s e2e` (then `fast-paths-cpu`), `nox -s bench`, `nox -s cuda-kernels` (GPU machines).

Environments are reused between runs (the first run builds them) and built with uv where it is
installed (`pip install "nox[uv]"` brings it): uv links packages from its cache, so a session's
environment takes seconds once any session has downloaded them; without uv, virtualenv and pip.
Torch is installed first and pinned, so the project's torch range is already satisfied and no
installer fetches a multi-GB CUDA build onto a CPU machine; uv is given pip's configured
find-links (where a machine keeps its CPU torch wheel), which it does not read itself. Override
the pin with MIXERBENCH_TORCH (e.g. a CUDA build's spec plus PIP_EXTRA_INDEX_URL on a GPU machine).
"""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "uv|virtualenv"

TORCH = os.environ.get("MIXERBENCH_TORCH", "torch==2.13.0")


def _pip_find_links() -> str | None:
    """pip's find-links setting (environment or pip config), or None."""
    if os.environ.get("PIP_FIND_LINKS"):
        return os.environ["PIP_FIND_LINKS"]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def install(session: nox.Session, extras: str = "dev") -> None:
    env = {}
    if session.venv_backend == "uv" and "UV_FIND_LINKS" not in os.environ and (links := _pip_find_links()):
        env["UV_FIND_LINKS"] = links  # the same torch wheel pip would take
    session.install(TORCH, env=env)
    session.install("-e", f".[{extras}]", env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on CPU, without the end-to-end checks (`nox -s e2e`); CUDA tests skip themselves."""
    install(session, "dev,distributed")
    session.run("pytest", "-q", "-m", "not e2e", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """The end-to-end checks (whole sweeps, subprocesses, kills, the launchers, design reviews, the GPU
    job's dry run), then the fast paths' kernels in Triton's CPU interpreter (`fast-paths-cpu`). CI runs
    them after `tests`."""
    install(session, "dev,distributed")
    session.run("pytest", "-q", "-m", "e2e", *session.posargs)
    if not session.posargs:
        session.notify("fast-paths-cpu", posargs=[])


@nox.session(name="device-dry-run")
def device_dry_run(session: nox.Session) -> None:
    """The prepared GPU job (`python -m benchmarks.device`, docs/gpu.md) on this CPU at tiny budgets; its
    files land in .nox/device-dry-run/tmp/out. `nox -s e2e` runs it too (tests/test_device.py)."""
    install(session)
    out = Path(session.create_tmp()) / "out"
    shutil.rmtree(out, ignore_errors=True)
    session.run("python", "-m", "benchmarks.device", "--dry-run", "--seed-store", "", "--out", str(out), *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark sweep (preset=default unless overridden): trains into the preset's store (default: runs/default,
    ignored), prints the leaderboard's path, then each row beside the committed reference (results/default) and
    whether the run reproduced it within seed noise."""
    install(session)
    session.run("python", "-m", "benchmarks.bench", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """pytest-benchmark micro-benchmarks (ESS speed); figures in the README come from here."""
    install(session)
    session.run("pytest", "benchmarks/perf", "--benchmark-only", "-s", "--benchmark-json=.benchmarks/perf.json", *session.posargs)


@nox.session
def kernels(session: nox.Session) -> None:
    """Throughput of every mixer over the device's length ladder (records under results/throughput),
    then the per-mixer pytest-benchmark suite. CPU: a few minutes; on a GPU the fast kernels run."""
    install(session)
    session.run("python", "-m", "benchmarks.throughput", *session.posargs)
    session.run("pytest", "benchmarks/perf/test_kernels.py", "--benchmark-only", "--benchmark-json=.benchmarks/kernels.json")
    session.run("python", "-m", "benchmarks.leaderboard", "results")


@nox.session
def conformance(session: nox.Session) -> None:
    """The interface checks, for every registered mixer or the one given: `nox -s conformance -- architecture=pkg.mod:Cls`."""
    install(session)
    session.run("python", "-m", "benchmarks.conformance", *session.posargs)


@nox.session
def review(session: nox.Session) -> None:
    """A design review of one mixer beside the reference leaderboard: `nox -s review -- architecture=pkg.mod:Cls`."""
    install(session)
    session.run("python", "-m", "benchmarks.review", *session.posargs)


# ignored: the page as the current code draws it from the published records, its check and screenshots
PAGE_STORE = Path("runs/page")


@nox.session
def page(session: nox.Session) -> None:
    """The published page in headless Chromium: rebuilds it from a copy of results/' records into runs/page
    (ignored, so the tree stays clean), checks that it renders, sorts and loads its figures, then screenshots
    it (and any design review under reviews/) at 1400 and 400 px into runs/page/screenshots, failing if anything
    overflows the window. The committed pages are rebuilt with `python -m benchmarks.leaderboard <store>`
    (tests/test_newcomer.py holds each to a rebuild of its committed records). Needs Debian's chromium and
    chromium-driver (apt-get install chromium chromium-driver)."""
    install(session)
    session.install("selenium>=4.20")
    shutil.rmtree(PAGE_STORE, ignore_errors=True)
    for part in ("records", "plans", "throughput"):
        if Path("results", part).is_dir():  # records only: claims and temporary files of a running sweep stay out
            shutil.copytree(Path("results", part), PAGE_STORE / part, ignore=shutil.ignore_patterns(".*"))
    session.run("python", "-m", "benchmarks.leaderboard", str(PAGE_STORE))
    page = str(PAGE_STORE / "index.html")
    session.run("pytest", "-q", "-m", "browser", "-rs", "tests/test_page.py", *session.posargs, env={"MIXERBENCH_PAGE": page})
    reviews = sorted(str(p) for p in Path("reviews").glob("*/report.html"))
    session.run("python", "-m", "benchmarks.screenshots", page, *reviews, "--out", str(PAGE_STORE / "screenshots"))


# Pinned: the interpreter tests patch two Triton internals (see tests/test_fast_paths_interpreted.py).
INTERPRETED_KERNELS = ("triton==3.9.0", "fla-core==0.6.0", "einops==0.8.2", "transformers==5.23.0")
CUDA_EXTENSION_SOURCES = ("mamba-ssm==2.3.2.post1", "causal-conv1d==1.7.0")


@nox.session(name="fast-paths-cpu")
def fast_paths_cpu(session: nox.Session) -> None:
    """The fast paths' kernels on a CPU, in Triton's interpreter: fla's chunk_gla and mamba-ssm's SSD
    run for real and must match the reference paths, forward and backward (about a minute).

    mamba-ssm and causal-conv1d are CUDA extensions that cannot be built here: their Python
    sources (Triton kernels and reference functions) are unpacked from the sdists and put on
    PYTHONPATH, with the CUDA build skipped.
    """
    install(session)
    # pip too: the sdists are fetched with `pip download`, which uv's environments do not have
    session.install(*INTERPRETED_KERNELS, "setuptools", "wheel", "packaging", "pip")
    sources = Path(session.create_tmp()) / "kernel-sources"
    unpacked = sources / ".unpacked"  # written last: an interrupted download is redone
    if not unpacked.exists():
        shutil.rmtree(sources, ignore_errors=True)
        skip_build = {"MAMBA_SKIP_CUDA_BUILD": "TRUE", "CAUSAL_CONV1D_SKIP_CUDA_BUILD": "TRUE"}
        session.run(
            "python", "-m", "pip", "download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
            "-d", str(sources), *CUDA_EXTENSION_SOURCES, env=skip_build,
        )  # fmt: skip
        for sdist in sources.glob("*.tar.gz"):
            with tarfile.open(sdist) as tar:
                tar.extractall(sources, filter="data")
        unpacked.touch()
    path = os.pathsep.join(str(p) for p in sorted(sources.iterdir()) if p.is_dir())
    env = {"TRITON_INTERPRET": "1", "PYTHONPATH": path}
    tests = ("tests/test_fast_paths_interpreted.py", "tests/test_delta_mixers.py")  # the latter: against fla's naive references
    session.run("pytest", "-q", "-m", "interpret", *tests, *session.posargs, env=env)


@nox.session(name="cuda-kernels")
def cuda_kernels(session: nox.Session) -> None:
    """On a GPU machine: the tests with mamba-ssm, causal-conv1d and flash-attn built against the CUDA torch.

    These packages compile against the torch already in the environment, so they need
    --no-build-isolation (an isolated build would install another torch) and a CUDA torch
    (set MIXERBENCH_TORCH to one). Build variables: MAX_JOBS limits parallel compilation;
    *_FORCE_BUILD=TRUE compiles instead of fetching a prebuilt wheel.
    """
    install(session, "dev,cuda")
    session.run("python", "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU/torch')")
    session.install("ninja", "packaging", "wheel")
    env = {"MAX_JOBS": os.environ.get("MAX_JOBS", "8")}
    for pkg in ("causal-conv1d", "mamba-ssm", "flash-attn"):
        session.install("--no-build-isolation", pkg, env=env)
    session.run("pytest", "-q", "-m", "cuda", *session.posargs)
