"""CPU kernels in C, compiled on first use and loaded with ctypes.

The sources live in `architectures/csrc/`. Each is compiled once per machine with the system's C
compiler (`cc`, or $CC) for the CPU it runs on (`-march=native`), into a cache keyed by the source,
the headers it includes, the flags, the compiler and the CPU's model and flags (so a cache shared
by machines of different CPUs, e.g. a cluster's home directory, never loads a library built for
another); it is written under a temporary name and renamed into place, so concurrent first uses (a
sweep's workers) never load a half-written file. No compiler, or a failed build, means no kernel:
`load` returns None once, with a warning, and callers keep their PyTorch reference path.

`MIXERBENCH_KERNELS=reference` disables them; `MIXERBENCH_KERNEL_CACHE` moves the cache
(default `~/.cache/mixerbench/kernels`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCES = Path(__file__).parent / "csrc"
# no -ffast-math: NaN and infinity keep their meaning (a diverging run must show its NaN)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC")
LIBS = ("-lm",)


def cpu_identity() -> str:
    """The CPU's model and instruction-set flags: what `-march=native` builds for."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@functools.cache
def _version(compiler: str) -> str:
    """`compiler --version`'s output: part of the kernel cache's key."""
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout


def compiler_version() -> str | None:
    """The first line of the C compiler's `--version` (None: no compiler, or it would not say)."""
    compiler = _compiler()
    if compiler is None:
        return None
    try:
        out = _version(compiler)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out.strip() else None


def _cache_dir() -> Path:
    return Path(os.environ.get("MIXERBENCH_KERNEL_CACHE", Path.home() / ".cache" / "mixerbench" / "kernels"))


def _with_headers(source: Path) -> list[Path]:
    """`source` and the local headers it includes (`#include "..."`), transitively: the cache key hashes them all,
    so that editing a header rebuilds the kernels that include it."""
    files = [source]
    for path in files:
        for name in re.findall(r'^\s*#\s*include\s*"([^"]+)"', path.read_text(), re.M):
            header = path.parent / name
            if header.is_file() and header not in files:
                files.append(header)
    return files


def _build(source: Path, compiler: str) -> Path:
    version = _version(compiler)
    texts = [path.read_text() for path in _with_headers(source)]
    ident = "\n".join([*texts, " ".join(FLAGS + LIBS), version, cpu_identity()])
    target = _cache_dir() / f"{source.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".so.tmp")
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, str(source), "-o", tmp, *LIBS], capture_output=True, text=True, timeout=300)
        if result.returncode:
            raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "compiler failed")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def pointer(t: torch.Tensor | None) -> ctypes.c_void_p | None:
    """A tensor's data as a C pointer argument (None: NULL); the tensor must be contiguous."""
    return None if t is None else ctypes.c_void_p(t.data_ptr())


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled library of `csrc/<name>.c`, or None (no compiler, a failed build, or disabled)."""
    if os.environ.get("MIXERBENCH_KERNELS") == "reference":
        return None
    compiler = _compiler()
    if compiler is None:
        warnings.warn(f"{name}: no C compiler found (set CC); using the PyTorch reference path", stacklevel=2)
        return None
    try:
        return ctypes.CDLL(str(_build(SOURCES / f"{name}.c", compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        warnings.warn(f"{name}: the CPU kernel did not build ({e}); using the PyTorch reference path", stacklevel=2)
        return None


def call(kernel: str, function: str, *args, who: str) -> None:
    """Call `function` of `load(kernel)` with `args`, tensors as pointers to their data (None passes NULL); a non-zero
    return is a failed allocation, raised as MemoryError naming `who`."""
    if getattr(load(kernel), function)(*(pointer(a) if isinstance(a, torch.Tensor) else a for a in args)):
        raise MemoryError(f"{who}: the CPU kernel could not allocate its buffers")
