"""Optional fast kernels: used when they import *and* work on the tensors' device.

Import alone proves nothing (triton and flash-linear-attention import on a CPU
machine and fail only when a kernel launches), so each kernel is tried once per
device on a small input and compared with the reference path; the verdict is
cached. `MIXERBENCH_KERNELS=reference` (or a mixer's `kernel="reference"`)
forces the reference path everywhere.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable

import torch

KERNEL_CHOICES = ("auto", "fast", "reference")
# device types the fast kernels run on; the CPU-interpreter tests add "cpu"
FAST_DEVICE_TYPES = frozenset({"cuda"})
_verdicts: dict[tuple[str, str], bool] = {}


def check_choice(mixer: str, kernel: str) -> None:
    if kernel not in KERNEL_CHOICES:
        raise ValueError(f"{mixer}: invalid `kernel`: {kernel!r}; choose one of {KERNEL_CHOICES}")


def optional_import(module: str):
    """The module, or None when it (or one of its own dependencies) is missing or broken."""
    try:
        return importlib.import_module(module)
    except Exception:  # a half-installed CUDA extension raises OSError/RuntimeError, not ImportError
        return None


@contextlib.contextmanager
def _plain_precision(device: torch.device):
    """Probes compare in fp32: the first call often comes from inside a bf16 autocast region
    (training), where the reference would otherwise run in bf16 and the comparison mismatch."""
    with contextlib.ExitStack() as stack:
        for device_type in {"cpu", device.type}:
            stack.enter_context(torch.autocast(device_type, enabled=False))
        stack.enter_context(torch.no_grad())
        yield


def cpu_path_allowed(kernel: str, device: torch.device) -> bool:
    """Whether a mixer may take one of its C paths for the CPU ahead of its fast kernels: not when the
    reference is asked for, nor on a device the fast kernels run on (`FAST_DEVICE_TYPES`: CUDA, and the
    CPU under Triton's interpreter, where the fast path is what is under test)."""
    return kernel != "reference" and device.type not in FAST_DEVICE_TYPES


def use_fast(name: str, kernel: str, device: torch.device, probe: Callable[[torch.device], bool]) -> bool:
    """Whether to run the fast kernel `name` on `device` for a mixer configured with `kernel`.

    `probe(device)` runs the kernel once on a small input and returns whether it
    matched the reference; any exception counts as "not available".
    """
    fast_device = device.type in FAST_DEVICE_TYPES
    if kernel == "reference" or os.environ.get("MIXERBENCH_KERNELS") == "reference" or not fast_device:
        if kernel == "fast" and not fast_device:
            raise RuntimeError(f"kernel='fast' requested for {name} but the tensors are on {device}, not CUDA")
        return False
    key = (name, str(device))
    if key not in _verdicts:
        try:
            with _plain_precision(device):
                _verdicts[key] = bool(probe(device))
        except Exception as e:  # missing package, no kernel for this GPU, ...
            _verdicts[key] = False
            if kernel == "fast":
                raise RuntimeError(f"kernel='fast' requested for {name} but it failed on {device}: {e}") from e
        if not _verdicts[key]:
            warnings.warn(f"{name}: fast kernel unavailable on {device}; using the reference path", stacklevel=3)
    if kernel == "fast" and not _verdicts[key]:
        raise RuntimeError(f"kernel='fast' requested for {name} but it is unavailable on {device}")
    return _verdicts[key]
