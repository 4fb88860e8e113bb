"""Kernel throughput of every mixer: forward, forward + backward, prefill and per-token decode.

    python -m benchmarks.throughput                      # every mixer, the device's length ladder, batch 4
    python -m benchmarks.throughput mixers=attention,mamba lengths=256,1024 store=/tmp/tp

Method (as kernel authors measure): fixed shapes and dtypes (fp32 on CPU, bf16 on CUDA), warm-up
calls, then the median of repeated timings (at least 5, and at least 0.25 s of them) — CUDA
events around each call with synchronisation on GPU, `time.perf_counter` on CPU. Prefill is the
inference-mode forward over the prompt; decode is the median time of the `step` that produces
token L, holding the cache of the L - 1 before it.
Peak memory of forward + backward is the CUDA allocator's peak, or on CPU the same quantity read
from Linux's counters: the bytes of the weights and input plus the peak increase of the resident
set during the call (`peak_memory`). FLOPs are the matmul FLOPs `torch.utils.flop_counter` counts
on the reference path on the meta device (`model_flops`), so every kernel path of a mixer is
credited with the same work; on CUDA achieved FLOP/s is also given as a fraction of the device's
dense bf16 peak. The scaling exponent of time with L is the slope of log(time) on log(L).
Each (mixer, device, kernel, L) is one record under `<store>/throughput/`.
"""

from __future__ import annotations

import copy
import ctypes
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from architectures import registry
from architectures.base import tensor_bytes, with_length
from architectures.kernels import check_choice
from benchmarks.overrides import wants_help
from benchmarks.provenance import provenance
from benchmarks.store import Store, run_key
from benchmarks.train import keep_freed_memory

CPU_LENGTHS = (128, 256, 512, 1024, 2048)
CUDA_LENGTHS = (1024, 2048, 4096, 8192, 16384)
MIN_TIME_S = 0.25  # timed seconds per measurement, at least (see `measure`)
# dense bf16 tensor-core peaks (NVIDIA datasheets, without sparsity), for achieved-vs-peak on
# CUDA; most specific name first, since device names nest ("H100 PCIe" contains "H100").
# Devices not listed get no fraction rather than a guessed one.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
)


@dataclass
class Timing:
    median_s: float
    times_s: list[float] = field(default_factory=list)


def measure(
    fn: Callable[[], object],
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | None = None,
    clock: Callable[[], float] = time.perf_counter,
    min_time_s: float = 0.0,
    max_repeats: int = 1000,
) -> Timing:
    """Median wall time of `fn()` after `warmup` calls; CUDA events with synchronisation on a GPU.

    At least `repeats` timed calls, and more (up to `max_repeats`) until they add up to
    `min_time_s`: short calls get many samples, so that one hiccup of a shared machine cannot
    move the median.
    """
    if repeats < 1 or warmup < 0 or max_repeats < repeats:
        raise ValueError(f"measure: need 1 <= repeats <= max_repeats and warmup >= 0, got {repeats}, {max_repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    cuda = device is not None and device.type == "cuda"
    while len(times) < repeats or (sum(times) < min_time_s and len(times) < max_repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = clock()
            fn()
            times.append(clock() - t0)
    return Timing(statistics.median(times), times)


def scaling_exponent(lengths, times) -> float:
    """Slope of log(time) against log(length): ~2 for attention, ~1 for a recurrence."""
    x, y = np.log(np.asarray(lengths, dtype=float)), np.log(np.asarray(times, dtype=float))
    if len(x) < 2:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def _cpu_peak_increase(fn: Callable[[], object]) -> int | None:
    """Bytes of resident memory `fn` adds at its peak, or None where Linux's counters are missing.

    The freed heap is handed back to the OS first (malloc_trim), so that `fn` cannot run on pages an
    earlier measurement left resident, and the kernel's high-water mark is reset to the current
    RSS (writing 5 to /proc/self/clear_refs, Linux >= 4.0); the peak is then VmHWM - RSS before.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kib("VmRSS")
    except (OSError, AttributeError):
        return None
    fn()
    return max(_proc_status_kib("VmHWM") - before, 0) * 1024


def peak_memory(device: torch.device, fn: Callable[[], object], held: int) -> tuple[int, str]:
    """Peak memory of `fn` and how it was read, comparable across devices: the tensors already
    held (`held` bytes: weights, inputs) plus what `fn` allocates at its peak."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), "cuda allocator peak"
    increase = _cpu_peak_increase(fn)
    if increase is not None:
        return held + increase, "held tensors + peak RSS increase"
    import resource  # not Linux: only the process's lifetime peak is available

    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024), "process max RSS"


def _flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def model_flops(mixer: nn.Module, x: Tensor) -> tuple[int, str]:
    """Matmul FLOPs of one forward, and how they were counted.

    Counted on the reference path on the meta device: the same work is credited whichever kernel
    runs (the counter cannot see inside Triton or CUDA-extension kernels, nor SDPA's CPU kernel),
    and nothing is computed or allocated. A mixer that cannot run on meta is counted as it runs.
    """
    try:
        reference = copy.deepcopy(mixer).to("meta")
        if hasattr(reference, "kernel_choice"):
            reference.kernel_choice = "reference"
        return _flops(lambda: reference(x.to("meta"))), "reference path"
    except Exception:  # noqa: BLE001 - e.g. an out-of-tree mixer that leaves torch
        return _flops(lambda: mixer(x)), "as run (kernels invisible to the counter add nothing)"


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


def peak_bf16_flops(device_name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in device_name), None)


def measure_mixer(
    name: str,
    length: int,
    device: torch.device,
    d_model: int = 64,
    batch: int = 1,
    kernel: str = "auto",
    repeats: int = 5,
    decode_steps: int = 16,
) -> dict:
    """Throughput of one mixer at one sequence length; returns the metrics of a record."""
    if device.type == "cpu":  # the allocator setting training runs under, so the two are timed alike
        keep_freed_memory()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    extra = {"kernel": kernel} if kernel != "auto" else {}  # out-of-tree mixers need not take `kernel`
    extra = with_length(registry.resolve(name), extra, length)
    mixer = registry.build(name, d_model=d_model, **extra).to(device=device, dtype=dtype)
    x = torch.randn(batch, length, d_model, device=device, dtype=dtype)
    tokens = batch * length

    def forward():
        with torch.no_grad():
            return mixer(x)

    def forward_backward():
        xg = x.detach().requires_grad_()
        mixer(xg).float().square().mean().backward()

    def prefill():
        with torch.inference_mode():
            return mixer(x)

    out: dict = {"mixer": name, "seq_len": length, "batch": batch, "d_model": d_model, "dtype": str(dtype).replace("torch.", "")}
    for mode, fn in (("forward", forward), ("forward_backward", forward_backward), ("prefill", prefill)):
        t = measure(fn, warmup=1, repeats=repeats, device=device, min_time_s=MIN_TIME_S)
        out[f"{mode}_s"] = t.median_s
        out[f"{mode}_times_s"] = t.times_s  # every repeat, so the spread can be judged
        out[f"{mode}_tokens_per_s"] = tokens / t.median_s
    out["kernel"] = getattr(mixer, "kernel", "unknown")
    held = tensor_bytes(x, *mixer.parameters(), *mixer.buffers())
    out["peak_memory_bytes"], out["peak_memory_kind"] = peak_memory(device, forward_backward, held)
    out["forward_flops"], out["flops_counted_on"] = model_flops(mixer, x)
    out["forward_flops_per_s"] = out["forward_flops"] / out["forward_s"]
    peak = device_peak_flops(device)
    if peak:
        out["forward_fraction_of_peak"] = out["forward_flops_per_s"] / peak

    # decode: the step that produces token L, with the cache of the L - 1 tokens before it
    with torch.no_grad():
        state = mixer.init_state(batch)
        for t in range(length - 1):  # the reference way to reach the cache; not timed
            _, state = mixer.step(x[:, t], state)
        x_t = x[:, -1]
        current = {"state": state}

        def step():
            current["y"], current["state_next"] = mixer.step(x_t, current["state"])

        t = measure(step, warmup=2, repeats=decode_steps, device=device, min_time_s=MIN_TIME_S)
    out["decode_step_s"] = t.median_s
    out["decode_step_times_s"] = t.times_s
    out["decode_tokens_per_s"] = batch / t.median_s
    return out


def fallback_note(name: str, device: torch.device, kernel_used: str) -> str:
    if device.type != "cuda":
        return f"no CUDA device: {name} ran its {kernel_used} path"
    if kernel_used == "reference":
        return f"{name}: fast kernel unavailable on {device}, fell back to the reference path"
    return ""


def run(
    mixers: list[str],
    lengths: list[int],
    store_root: str,
    device: torch.device,
    kernel: str = "auto",
    d_model: int = 64,
    batch: int = 4,
    repeats: int = 5,
    force: bool = False,
) -> list[dict]:
    store = Store(f"{store_root}/throughput")
    prov = provenance(device)
    records = []
    jobs = [(m, n) for m in mixers for n in lengths]
    for name, length in tqdm(jobs, desc="throughput", dynamic_ncols=True):
        cfg = {
            "mixer": name,
            "seq_len": length,
            "device": prov["device"],
            "kernel": kernel,
            "d_model": d_model,
            "batch": batch,
            "repeats": repeats,
            "commit": prov["commit"],
        }
        key = run_key({**cfg, "kind": "throughput"})
        if store.exists(key) and not force:
            records.append(store.read(key))
            continue
        record = {"key": key, "kind": "throughput", "config": cfg, "provenance": prov}
        record["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        # the machine's load when the row was measured: a shared CPU's numbers mean little without it
        record["load_average"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        try:
            metrics = measure_mixer(name, length, device, d_model, batch, kernel, repeats)
            metrics["fallback"] = fallback_note(name, device, metrics["kernel"])
            record.update(status="ok", metrics=metrics)
        except torch.cuda.OutOfMemoryError as e:
            record.update(status="failed", error=f"out of memory: {e}")
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            record.update(status="failed", error=f"{type(e).__name__}: {e}")
        store.write(record)
        records.append(record)
    return records


USAGE = (
    "python -m benchmarks.throughput [mixers=a,b] [lengths=128,256] [store=results] [device=cpu|cuda] "
    "[kernel=auto|fast|reference] [d_model=64] [batch=4] [repeats=5] [force=true]"
)


def _positive_ints(key: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"{key}={text!r}: expected comma-separated integers, e.g. {key}=128,256") from None
    if any(v < 1 for v in values):
        raise SystemExit(f"{key}={text!r}: every value must be >= 1")
    return values


def _flag(key: str, text: str) -> bool:
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise SystemExit(f"{key}={text!r}: give true or false")
    return text.lower() in ("1", "true", "yes")


def parse_args(argv: list[str]) -> dict:
    """`key=value` arguments, checked here so that bad input is one clear line, not a failed record."""
    malformed = [a for a in argv if "=" not in a]
    if malformed:
        raise SystemExit(f"arguments are key=value, got {malformed}; see python -m benchmarks.throughput --help")
    args = dict(a.split("=", 1) for a in argv)
    unknown = set(args) - {"mixers", "lengths", "store", "device", "kernel", "d_model", "batch", "repeats", "force"}
    if unknown:
        raise SystemExit(f"unknown argument(s) {sorted(unknown)}; see python -m benchmarks.throughput --help")
    try:
        device = torch.device(args.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise SystemExit(f"device={args['device']!r}: not a torch device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device=cuda: no CUDA device is available here; use device=cpu")
    mixers = args["mixers"].split(",") if "mixers" in args else registry.names()
    try:
        for m in mixers:
            registry.resolve(m)
    except ValueError as e:  # unknown mixer: the message lists the known ones
        raise SystemExit(str(e.args[0] if e.args else e)) from None
    kernel = args.get("kernel", "auto")
    try:
        check_choice("throughput", kernel)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if kernel == "fast" and device.type != "cuda":
        raise SystemExit(f"kernel=fast: the fast kernels run on CUDA only, and device is {device}; use kernel=auto or reference")
    default = CUDA_LENGTHS if device.type == "cuda" else CPU_LENGTHS
    config = {
        "mixers": mixers,
        "lengths": _positive_ints("lengths", args["lengths"]) if "lengths" in args else list(default),
        "store_root": args.get("store", "results"),
        "device": device,
        "kernel": kernel,
        "force": _flag("force", args.get("force", "false")),
    }
    for key in ("d_model", "batch", "repeats"):  # absent: run()'s defaults
        if key in args:
            config[key] = _positive_ints(key, args[key])[0]
    return config


# ---------------------------------------------------------------- tables of throughput records


def throughput_rows(records: list[dict]) -> pd.DataFrame:
    """One row per successful record, keeping only the latest measurement of each mixer, device,
    kernel path, length and batch (`measured_at`): re-measuring at new code supersedes the old row
    on the page and in the scaling and speedup tables, and the old record stays in the store.
    Records from before `measured_at` count as older than any that have it."""
    out = []
    for r in records:
        if r.get("status") != "ok":
            continue
        m = r["metrics"]
        out.append(
            {
                "measured_at": r.get("measured_at", ""),
                "mixer": m["mixer"],
                "device": r["provenance"]["device"],
                "kernel": m["kernel"],
                "L": m["seq_len"],
                "batch": m["batch"],
                "forward tok/s": m["forward_tokens_per_s"],
                "fwd+bwd tok/s": m["forward_backward_tokens_per_s"],
                "prefill tok/s": m["prefill_tokens_per_s"],
                "decode tok/s": m["decode_tokens_per_s"],
                "forward ms": 1e3 * m["forward_s"],
                "peak MB": m["peak_memory_bytes"] / 2**20,
                "forward GFLOP/s": m["forward_flops_per_s"] / 1e9,
                "% of peak": 100 * m["forward_fraction_of_peak"] if "forward_fraction_of_peak" in m else float("nan"),
                "commit": r["provenance"]["commit"][:10] + ("+dirty" if r["provenance"].get("dirty") else ""),
                "load": r.get("load_average", float("nan")),
            }
        )
    cols = [
        "mixer",
        "device",
        "kernel",
        "L",
        "batch",
        "forward tok/s",
        "fwd+bwd tok/s",
        "prefill tok/s",
        "decode tok/s",
        "forward ms",
        "peak MB",
        "forward GFLOP/s",
        "% of peak",
        "commit",
        "load",
    ]
    tp = pd.DataFrame(out, columns=["measured_at", *cols])
    same = ["mixer", "device", "kernel", "L", "batch"]
    tp = tp[tp["measured_at"] == tp.groupby(same)["measured_at"].transform("max")]
    return tp[cols].sort_values(["device", "mixer", "kernel", "L"], ignore_index=True)


def scaling_table(tp: pd.DataFrame) -> pd.DataFrame:
    """Exponent of time with L (slope of log time on log L) per mixer, device and kernel."""
    out = []
    for (mixer, device, kernel), g in tp.groupby(["mixer", "device", "kernel"]):
        if g["L"].nunique() < 2:
            continue
        out.append(
            {
                "mixer": mixer,
                "device": device,
                "kernel": kernel,
                "lengths": f"{g['L'].min()}-{g['L'].max()}",
                "forward ~ L^": scaling_exponent(g["L"], g["L"] * g["batch"] / g["forward tok/s"]),
                "fwd+bwd ~ L^": scaling_exponent(g["L"], g["L"] * g["batch"] / g["fwd+bwd tok/s"]),
            }
        )
    return pd.DataFrame(out, columns=["mixer", "device", "kernel", "lengths", "forward ~ L^", "fwd+bwd ~ L^"])


def speedup_table(tp: pd.DataFrame) -> pd.DataFrame:
    """Fast kernel vs reference path, same mixer, device and L (both must have been measured)."""
    ref = tp[tp["kernel"] == "reference"].set_index(["mixer", "device", "L"])
    out = []
    for _, row in tp[tp["kernel"] != "reference"].iterrows():
        key = (row["mixer"], row["device"], row["L"])
        if key in ref.index:
            base = ref.loc[key]
            out.append(
                {
                    "mixer": row["mixer"],
                    "device": row["device"],
                    "L": row["L"],
                    "fast kernel": row["kernel"],
                    "forward speedup": row["forward tok/s"] / base["forward tok/s"],
                    "fwd+bwd speedup": row["fwd+bwd tok/s"] / base["fwd+bwd tok/s"],
                }
            )
    return pd.DataFrame(out, columns=["mixer", "device", "L", "fast kernel", "forward speedup", "fwd+bwd speedup"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv, USAGE, __doc__):
        return 0
    try:
        config = parse_args(argv)
    except SystemExit as e:  # bad input: one line and exit 2, as every other command of the suite
        if isinstance(e.code, str):
            print(f"configuration error: {e.code}", file=sys.stderr)
            return 2
        raise
    records = run(**config)
    failed = [r for r in records if r["status"] != "ok"]
    for _, row in scaling_table(throughput_rows(records)).iterrows():
        print(f"{row['mixer']:18s} {row['kernel']:14s} forward time ~ L^{row['forward ~ L^']:.2f}  ({row['device']})")
    print(f"{len(records)} throughput records ({len(failed)} failed) in {config['store_root']}/throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
