"""Where a number came from: commit, dirty flag, device, the CPU, versions."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

from architectures import cpu_kernels

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "numpy", "hydra-core", "mamba-ssm", "causal-conv1d", "flash-attn", "flash-linear-attention", "triton")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def git_state() -> dict:
    commit = _git("rev-parse", "HEAD")
    # results/, runs/ and reviews/ are written by the suite itself: they do not make the code dirty
    status = _git("status", "--porcelain", "--", ".", ":(exclude)results", ":(exclude)runs", ":(exclude)reviews")
    return {"commit": commit or "unknown", "dirty": bool(status) if status is not None else None}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@lru_cache(maxsize=1)
def cpu() -> dict:
    """The host CPU, which a run's numbers depend on beyond its code: the C kernels are compiled for it
    (`-march=native`) and PyTorch dispatches to its vector instructions, so one config trained on a CPU
    of another `identity` (a hash of the model and its instruction-set flags) or with another compiler
    can round differently, and its curve then parts from the other's (docs/protocol.md)."""
    identity = cpu_kernels.cpu_identity()
    model = next((line.split(":", 1)[1].strip() for line in identity.splitlines() if line.startswith("model name")), None)
    return {
        "model": model or platform.processor() or platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "identity": hashlib.sha256(identity.encode()).hexdigest()[:12],
        "compiler": cpu_kernels.compiler_version(),
    }


def who_trains() -> dict:
    """What trains a stretch of a run's steps here: the commit and the CPU's identity (`benchmarks.run.trained_by`)."""
    return {"commit": git_state()["commit"], "cpu": cpu()["identity"]}


def versions() -> dict:
    out = {"python": platform.python_version(), "cuda": torch.version.cuda}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(device: torch.device) -> dict:
    return {**git_state(), "device": device_name(device), "device_type": device.type, "cpu": cpu(), "versions": versions()}
