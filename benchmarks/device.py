"""One prepared job for a lent GPU machine: its ceilings, every mixer's throughput, MQAR at Zoology's budget.

    python -m benchmarks.device --out DIR [--minutes 9] [--workers 6]      # on the GPU machine
    python -m benchmarks.device --out DIR --dry-run                        # the same on a CPU, tiny (CI)
    python -m benchmarks.device --fetch-wheels wheels                      # here: what the GPU machine lacks
    python -m benchmarks.device --unpack RETURNED [--into results/gpu]     # here: the records that came back

docs/gpu.md gives the call. The job runs with the GPU machine's own torch and the wheels of
`WHEELS` on PYTHONPATH (nothing is installed there) and, in order:

1. ceilings: a dense matmul (bf16 8192^3 on CUDA, fp32 on a CPU) and a device-to-device copy,
   timed as `benchmarks.throughput.measure` times; one JSON record, `<store>/ceilings/<key>.json`
   (beside the store's run and throughput records, not among them: it is neither kind).
2. throughput: `benchmarks.throughput.run` for every registered mixer, one (mixer, kernel path,
   L) at a time, shortest L first so that a short budget still covers every mixer. Paths: the
   reference, `fast` where it runs something else (where it fails, one failed record says why),
   and `auto` where that picks a third path (SDPA). Each ok record gets its forward FLOP/s and
   bytes/s as fractions of the measured ceilings. A measurement over `--measure-cap` seconds is
   recorded as failed and the path's longer lengths are skipped.
3. training: the cells of `benchmarks/conf/device_priority.yaml` in order, each at every rate of
   its grid, composed by Hydra into resolved configs and trained by `benchmarks.run.run_one` in
   `--workers` processes side by side, each with its share of the cores; runs whose records the
   seed store (`--seed-store`, results/gpu) already holds are skipped.

The clock: throughput gets `--throughput-share` of `--minutes`, training the rest less the time
to pack. At the end the training processes are interrupted (KeyboardInterrupt: a run in progress
writes nothing and releases its claim; a record is written whole or not at all, see
`benchmarks.store.Store.write`). DIR then holds at most 8 files, each at most 16 MiB:
records.tar.gz (the new records, paths relative to the store: unpack into results/gpu),
summary.json and log.txt. They are packed after each phase and every minute of training too, so a
job stopped from outside still leaves what it had.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import io
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PRIORITY = ROOT / "benchmarks" / "conf" / "device_priority.yaml"
SEED_STORE = ROOT / "results" / "gpu"
MAX_FILES = 8  # what the GPU machine sends back: 8 files of 16 MiB at most
MAX_FILE_BYTES = 16 * 2**20
PHASES = ("ceilings", "throughput", "train")
USAGE_HINT = "see python -m benchmarks.device --help"

# What the job imports that the GPU machine's image lacks (docs/gpu.md), as wheels: distribution
# -> version, the one installed here where it is (the tests ran with it), else this pin.
# hydra-core and its parsers: benchmarks.run; fla-core: the gated-linear mixers' fast path (Triton,
# nothing to compile); pydantic and its needs: the record types. All pure Python except
# pydantic-core, fetched for the machine's CPython 3.12 on x86-64.
WHEELS = {
    "hydra-core": "1.3.8",
    "omegaconf": "2.3.1",
    "antlr4-python3-runtime": "4.9.3",  # PyPI has only its sdist: built into a wheel here
    "fla-core": "0.6.0",
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",  # pydantic needs a newer one than the image may have
}
SDIST_ONLY = {"antlr4-python3-runtime"}
BINARY = {"pydantic-core"}
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# Third-party modules the suite may import itself: those on the GPU machine's image, those the
# wheels bring, and the optional kernels that are meant to be missing there.
LOCAL_PACKAGES = {"architectures", "benchmarks", "tasks"}
ON_GPU_IMAGE = {
    "torch", "numpy", "pandas", "scipy", "matplotlib", "seaborn", "jinja2", "markdown_it", "yaml",
    "tqdm", "packaging", "einops", "triton", "typing_extensions",
}  # fmt: skip
FROM_WHEELS = {"hydra", "omegaconf", "antlr4", "fla", "pydantic", "pydantic_core", "annotated_types", "typing_inspection"}
OPTIONAL_KERNELS = {"flash_attn", "mamba_ssm", "causal_conv1d", "selective_scan_cuda", "causal_conv1d_cuda"}


# ---------------------------------------------------------------- imports the GPU machine would lack


class ImportAudit(importlib.abc.MetaPathFinder):
    """Notes every module the suite's own code imports that neither the GPU machine's image nor the
    wheels provide (it changes nothing: the import goes on as usual). The dry run reports them, so
    a new dependency shows up here before a GPU lease is spent on an ImportError."""

    def __init__(self):
        self.missing: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in sys.stdlib_module_names or top in LOCAL_PACKAGES | ON_GPU_IMAGE | FROM_WHEELS | OPTIONAL_KERNELS:
            return None
        frame = sys._getframe(1)
        while frame is not None:  # the first frame outside the import machinery made the import
            name = frame.f_globals.get("__name__", "")
            if not (name.startswith(("importlib", "_frozen_importlib")) or name == __name__):
                if name.partition(".")[0] in LOCAL_PACKAGES:
                    self.missing.add(f"{top} (imported by {name})")
                break
            frame = frame.f_back
        return None


def install_audit() -> ImportAudit:
    audit = ImportAudit()
    sys.meta_path.insert(0, audit)
    return audit


# ---------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the flag and the fix, exit 2, as the suite's other commands
        self.exit(2, f"configuration error: {message}; {USAGE_HINT}\n")


def _number(kind, lo: float, hi: float = math.inf, example: str = "1"):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}, e.g. {example}"
            ) from None
        if not (lo < value < hi if hi < math.inf else lo < value) or not math.isfinite(value):
            bound = f"between {lo:g} and {hi:g}" if hi < math.inf else f"> {lo:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, e.g. {example}; got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m benchmarks.device",
        description="One job for a lent GPU machine: ceilings, every mixer's throughput, MQAR at Zoology's "
        "budget, within a clock; packed into at most 8 files (docs/gpu.md).",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="DIR", help="run the job; DIR (new or empty) gets its files")
    mode.add_argument("--fetch-wheels", metavar="DIR", help="download the wheels the GPU machine lacks into DIR")
    mode.add_argument("--unpack", metavar="DIR", help="unpack the records in the files that came back (DIR) into --into")
    p.add_argument(
        "--into", metavar="STORE", help=f"with --unpack: the store to unpack into (default {SEED_STORE.relative_to(ROOT)})"
    )
    p.add_argument("--minutes", type=_number(float, 0, example="9"), help="stop cleanly within this (default 9; --dry-run: 2)")
    p.add_argument("--dry-run", action="store_true", help="on a CPU, tiny: two lengths, a few training steps (CI)")
    p.add_argument("--workers", type=_number(int, 0, example="6"), help="training processes (default 6 on CUDA, 2 in --dry-run)")
    p.add_argument(
        "--throughput-share", type=_number(float, 0, 1, example="0.3"), default=0.3, help="of --minutes for throughput (0.3)"
    )
    p.add_argument("--measure-cap", type=_number(float, 0, example="60"), help="seconds per throughput measurement (60)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"which phases, comma-separated (default {','.join(PHASES)})")
    p.add_argument(
        "--priority", default=str(PRIORITY), help="the cells to train, in order (benchmarks/conf/device_priority.yaml)"
    )
    p.add_argument("--cells", type=_number(int, 0, example="10"), help="only the first N cells of --priority")
    p.add_argument(
        "--seed-store", default=str(SEED_STORE), help="records already brought back: their runs are skipped ('' for none)"
    )
    p.add_argument(
        "--commit", help="the commit the tree was copied at, recorded where git cannot tell (the GPU copy has no .git)"
    )
    return p


def _load_priority(path: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"argument --priority: cannot read {path}: {e}".splitlines()[0]) from None
    ok = (
        isinstance(data, dict)
        and isinstance(data.get("protocol"), list)
        and isinstance(data.get("cells"), list)
        and data["cells"]
    )
    if not ok:
        raise ValueError(f"argument --priority: {path} needs a `protocol` list of overrides and a non-empty `cells` list")
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or not {"mixer", "seq_len", "num_kv_pairs"} <= set(cell):
            raise ValueError(f"argument --priority: cell {i} of {path} needs mixer, seq_len and num_kv_pairs; got {cell!r}")
    return data


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The arguments, checked before anything is written; a usage error exits 2 with one line."""
    p = parser()
    args = p.parse_args(argv)
    if args.into and not args.unpack:
        p.error("argument --into: only with --unpack; give --unpack DIR --into STORE")
    if not args.out:
        return args
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"argument --out: {out} is a file; give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        p.error(f"argument --out: {out} is not empty; give a new or empty directory (the files that come back are all in it)")
    phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    if not phases or set(phases) - set(PHASES):
        p.error(f"argument --phases: {args.phases!r}; give some of {','.join(PHASES)}")
    args.phases = [s for s in PHASES if s in phases]
    if not args.dry_run and not torch.cuda.is_available():
        p.error("argument --dry-run: no CUDA device here, and the job measures a GPU; on a CPU give --dry-run")
    try:
        args.priority_data = _load_priority(args.priority)
    except ValueError as e:
        p.error(str(e))
    args.minutes = args.minutes or (2.0 if args.dry_run else 9.0)
    args.workers = args.workers or (2 if args.dry_run else 6)
    args.measure_cap = args.measure_cap or (20.0 if args.dry_run else 60.0)
    return args


# ---------------------------------------------------------------- the job's bookkeeping


class Job:
    """The clock, the log and the work store of one job; packs the new records into `out`."""

    def __init__(self, args: argparse.Namespace, audit: ImportAudit):
        self.args, self.audit = args, audit
        self.start = time.monotonic()
        self.end = self.start + 60 * args.minutes
        self.pack_reserve = 10.0 if args.dry_run else 20.0
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="mixerbench-device-"))
        self.store = self.work / "store"
        self.device = torch.device("cpu" if args.dry_run else "cuda")
        self.seeded = seed_store(Path(args.seed_store), self.store) if args.seed_store else set()
        self.summary: dict = {
            "job": {
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "minutes": args.minutes,
                "dry_run": args.dry_run,
                "device": self.device.type,
                "workers": args.workers,
                "phases": args.phases,
                "seeded_records": len(self.seeded),
                "argv": getattr(args, "argv", None),
            },
        }

    def left(self) -> float:
        return self.end - time.monotonic()

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.start:7.1f}s] {message}"
        print(line, flush=True)
        with open(self.out / "log.txt", "a") as f:
            f.write(line + "\n")

    def pack(self) -> list[Path]:
        """Write the new records (not those seeded) and the summary into `out`, replacing the last pack."""
        files = [
            p
            for p in sorted(self.store.rglob("*.json"))
            if not p.name.startswith(".") and "corrupt" not in p.parts and p.relative_to(self.store).as_posix() not in self.seeded
        ]
        tars = pack_records(self.store, files, self.out, MAX_FILES - 2)
        self.summary["job"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        self.summary["imports_missing_on_gpu"] = sorted(self.audit.missing)
        self.summary["files"] = {p.name: p.stat().st_size for p in tars}
        self.summary["records_packed"] = len(files)
        _write_atomic(self.out / "summary.json", json.dumps(self.summary, indent=1, default=str) + "\n")
        return tars


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def seed_store(seed: Path, store: Path) -> set[str]:
    """Copy the records of `seed` (a store that holds what earlier jobs brought back) into `store`, so
    that their runs are skipped. Failed throughput records stay behind: they are measured again.
    Returns their paths relative to the store, which the pack leaves out."""
    from benchmarks.store import CorruptRecord, load_record

    copied = set()
    for path in sorted(seed.rglob("*.json")) if seed.is_dir() else []:
        rel = path.relative_to(seed)
        if path.name.startswith(".") or "corrupt" in rel.parts or rel.parent.name != "records":
            continue
        try:
            record = load_record(path)
        except (CorruptRecord, OSError):
            continue
        if record.get("kind") == "throughput" and record["status"] != "ok":
            continue
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, store / rel)
        copied.add(rel.as_posix())
    return copied


def pack_records(root: Path, files: list[Path], out: Path, max_parts: int) -> list[Path]:
    """`files` (under `root`) as records.tar.gz in `out`, or as records-1.tar.gz, records-2.tar.gz, ...
    where one would pass MAX_FILE_BYTES (at most `max_parts` of them); earlier packs are replaced."""

    def write(name: str, chunk: list[Path]) -> Path:
        tmp = out / f".{name}.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for p in chunk:
                tar.add(p, arcname=p.relative_to(root).as_posix())
        return tmp

    def split(chunk: list[Path]) -> list[list[Path]]:
        tmp = write("probe.tar.gz", chunk)
        size = tmp.stat().st_size
        tmp.unlink()
        if size <= MAX_FILE_BYTES or len(chunk) == 1:
            return [chunk]
        half = len(chunk) // 2
        return split(chunk[:half]) + split(chunk[half:])

    parts = [files]
    tmp = write("records.tar.gz", files)
    if tmp.stat().st_size > MAX_FILE_BYTES:
        tmp.unlink()
        parts = split(files)[:max_parts]
    names = ["records.tar.gz"] if len(parts) == 1 else [f"records-{i + 1}.tar.gz" for i in range(len(parts))]
    written = []
    for name, chunk in zip(names, parts, strict=True):
        tmp = out / f".{name}.tmp"
        if not tmp.exists():
            write(name, chunk)
        os.replace(tmp, out / name)
        written.append(out / name)
    for stale in out.glob("records*.tar.gz"):
        if stale not in written:
            stale.unlink()
    return written


def pin_provenance(commit: str | None) -> None:
    """Record `commit` where git cannot tell (the GPU machine's copy of the tree has no .git)."""
    from benchmarks import provenance

    if commit and provenance.git_state()["commit"] == "unknown":
        sha, _, dirty = commit.partition("+")
        provenance.git_state = lambda: {"commit": sha, "dirty": True if dirty else None}


# ---------------------------------------------------------------- 1. ceilings


def measure_ceilings(job: Job) -> dict:
    from benchmarks.provenance import provenance
    from benchmarks.store import run_key
    from benchmarks.throughput import measure, peak_bf16_flops

    device = job.device
    if device.type == "cuda":
        n, dtype, copy_bytes = 8192, torch.bfloat16, 2**30
    else:
        n, dtype, copy_bytes = (256 if job.args.dry_run else 2048), torch.float32, (16 if job.args.dry_run else 256) * 2**20
    torch.manual_seed(0)

    def timed_matmul():
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        return measure(lambda: a @ b, warmup=3, repeats=10, device=device)

    def timed_copy():
        src = torch.empty(copy_bytes, dtype=torch.uint8, device=device).random_()
        dst = torch.empty_like(src)
        return measure(lambda: dst.copy_(src), warmup=3, repeats=10, device=device)

    matmul, copy = timed_matmul(), timed_copy()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    prov = provenance(device)
    measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = {"kind": "ceilings", "device": prov["device"], "matmul_n": n, "dtype": str(dtype).replace("torch.", ""),
              "copy_bytes": copy_bytes, "commit": prov["commit"], "measured_at": measured_at}  # fmt: skip
    metrics = {
        "matmul_flops_per_s": 2 * n**3 / matmul.median_s,
        "matmul_times_s": matmul.times_s,
        "copy_bytes_per_s": 2 * copy_bytes / copy.median_s,  # bytes read + bytes written
        "copy_counted_as": "bytes read + bytes written",
        "copy_times_s": copy.times_s,
        "datasheet_bf16_flops": peak_bf16_flops(prov["device"]) if device.type == "cuda" else None,
    }
    record = {"key": run_key(config), "kind": "ceilings", "config": config, "status": "ok", "metrics": metrics,
              "provenance": prov, "measured_at": measured_at}  # fmt: skip
    (job.store / "ceilings").mkdir(parents=True, exist_ok=True)
    _write_atomic(job.store / "ceilings" / f"{record['key']}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


# ---------------------------------------------------------------- 2. throughput


class MeasurementTimeout(TimeoutError):
    """A measurement ran past the per-measurement cap: recorded as failed by benchmarks.throughput."""


class OutOfTime(BaseException):
    """The phase's time is up: not an Exception, so it passes the suite's handlers and no record is written."""


@contextlib.contextmanager
def alarm(seconds: float, exc: BaseException):
    """Raise `exc` in this (the main) thread if the block runs longer than `seconds`."""
    armed = [True]

    def fire(signum, frame):
        if armed[0]:
            armed[0] = False
            raise exc

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _build(name: str, kernel: str, length: int, d_model: int = 64):
    from architectures import registry
    from architectures.base import with_length

    extra = {"kernel": kernel} if kernel != "auto" else {}  # out-of-tree mixers need not take `kernel`
    return registry.build(name, d_model=d_model, **with_length(registry.resolve(name), extra, length))


def kernel_paths(name: str, device: torch.device) -> tuple[list[tuple[str, bool]], dict]:
    """The kernel choices to measure `name` with, each with whether at every length (False: once, at
    the first, where it fails: its record says why), and the label each choice ran or its error."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    length = 256 if device.type == "cuda" else 32
    labels: dict = {}
    for choice in ("reference", "fast", "auto"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mixer = _build(name, choice, length).to(device=device, dtype=dtype)
                with torch.no_grad():
                    mixer(torch.randn(1, length, 64, device=device, dtype=dtype))
            labels[choice] = getattr(mixer, "kernel", "unknown")
        except Exception as e:  # noqa: BLE001 - a path that cannot run is measured once, to record why
            labels[choice] = e
    ref, fast, auto = labels["reference"], labels["fast"], labels["auto"]
    if isinstance(ref, Exception):
        return [("reference", False)], labels
    paths = [("reference", True)]
    if isinstance(fast, Exception):
        paths.append(("fast", False))
    elif fast != ref:
        paths.append(("fast", True))
    if not isinstance(auto, Exception) and auto not in (ref, fast):
        paths.append(("auto", True))
    return paths, {k: v if isinstance(v, str) else f"{type(v).__name__}: {v}" for k, v in labels.items()}


def add_fractions(record: dict, ceilings: dict | None, length: int) -> None:
    """The forward's achieved FLOP/s and bytes/s as fractions of the measured ceilings. Bytes: the
    least a forward must move, input and output and weights once each (a lower bound)."""
    m = record["metrics"]
    elem = 2 if m["dtype"] == "bfloat16" else 4
    params = sum(p.numel() for p in _build(m["mixer"], record["config"]["kernel"], length, m["d_model"]).parameters())
    m["forward_min_bytes"] = 2 * m["batch"] * length * m["d_model"] * elem + params * elem
    m["forward_min_bytes_counted_as"] = "input + output + weights, each once"
    m["forward_bytes_per_s"] = m["forward_min_bytes"] / m["forward_s"]
    if ceilings is not None:
        c = ceilings["metrics"]
        m["ceilings_key"] = ceilings["key"]
        m["forward_fraction_of_matmul_ceiling"] = m["forward_flops_per_s"] / c["matmul_flops_per_s"]
        m["forward_fraction_of_copy_ceiling"] = m["forward_bytes_per_s"] / c["copy_bytes_per_s"]


def measure_throughput(job: Job, ceilings: dict | None, until: float) -> dict:
    from architectures import registry
    from benchmarks import throughput
    from benchmarks.store import Store

    device, dry = job.device, job.args.dry_run
    lengths = (32, 64) if dry else throughput.CUDA_LENGTHS
    if dry:
        throughput.MIN_TIME_S = 0.01  # seconds, not a quarter-second per mode, on the CPU
    store = Store(job.store / "throughput")
    mixers = registry.names()
    paths, labels = {}, {}
    for name in mixers:
        if time.monotonic() > until:
            break
        with contextlib.suppress(OutOfTime), alarm(max(until - time.monotonic(), 0.01), OutOfTime()):
            paths[name], labels[name] = kernel_paths(name, device)
            job.log(f"throughput {name}: paths {[p for p, _ in paths[name]]} ({labels[name]})")
    done: dict = {"ok": [], "failed": [], "not_measured": [], "already_recorded": [], "kernel_labels": labels}
    given_up: set = set()
    for length in lengths:
        for name in mixers:
            for choice, every in paths.get(name, [("reference", True)]):
                what = f"{name} {choice} L={length}"
                if (not every and length != lengths[0]) or (name, choice) in given_up:
                    continue
                left = until - time.monotonic()
                if left < 1:
                    done["not_measured"].append(what)
                    continue
                cap = job.args.measure_cap
                exc = MeasurementTimeout(f"over the job's cap of {cap:g} s per measurement") if cap < left else OutOfTime()
                started = time.monotonic()
                try:
                    with alarm(min(cap, left), exc), contextlib.redirect_stderr(io.StringIO()):  # its progress bar
                        record = throughput.run([name], [length], str(job.store), device, kernel=choice)[0]
                except OutOfTime:
                    done["not_measured"].append(what)
                    continue
                except Exception as e:  # noqa: BLE001 - e.g. the alarm outside the suite's own handler
                    done["failed"].append(f"{what}: {type(e).__name__}: {e}")
                    given_up.add((name, choice))
                    continue
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                seconds = time.monotonic() - started
                if record.get("measured_at", "") < job.summary["job"]["started"]:  # a seeded record: not measured again
                    done["already_recorded"].append(what)
                elif record["status"] == "ok":
                    add_fractions(record, ceilings, length)
                    store.write(record)
                    m = record["metrics"]
                    frac = m.get("forward_fraction_of_matmul_ceiling", float("nan"))
                    done["ok"].append(what)
                    job.log(f"throughput {what} [{m['kernel']}]: forward {m['forward_tokens_per_s']:.3g} tok/s "
                            f"({frac:.2%} of the matmul ceiling), {seconds:.1f} s")  # fmt: skip
                else:
                    given_up.add((name, choice))  # longer lengths fail the same way, or run longer still
                    done["failed"].append(f"{what}: {record['error'][:300]}")
                    job.log(f"throughput {what}: failed: {record['error'][:200]}")
    return done


# ---------------------------------------------------------------- 3. training


def compose_runs(job: Job) -> tuple[list[dict], list[str]]:
    """The priority list's runs as resolved configs, in order (each cell at every rate of its grid),
    and the cells that cannot run, each with why (nothing is trained for them)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from benchmarks.config import ConfigError, grid_runs, validate

    data = job.args.priority_data
    overrides = [str(o) for o in data["protocol"]]
    cells = data["cells"]
    if job.args.dry_run:
        dry = data.get("dry_run") or {}
        overrides += [str(o) for o in dry.get("overrides", [])]
        cells = cells[: int(dry.get("cells", 2))]
    if job.args.cells:
        cells = cells[: job.args.cells]
    runs, problems = [], []
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        for i, cell in enumerate(cells):
            cell_overrides = [
                f"architecture={cell['mixer']}",
                f"task.seq_len={cell['seq_len']}",
                f"task.num_kv_pairs={cell['num_kv_pairs']}",
                *(str(o) for o in cell.get("overrides", [])),
            ]
            if cell.get("state") is not None:
                cell_overrides.append(f"state={cell['state']}")
            what = f"cell {i} {cell}"
            try:
                cfg = OmegaConf.to_container(compose("config", overrides=overrides + cell_overrides), resolve=True)
                for key in ("preset", "sweep_progress"):  # sweep-level keys, not a run's (benchmarks.run.main)
                    cfg.pop(key, None)
                cfg.update(store=str(job.store), device=job.device.type, progress=False)
                cell_runs = grid_runs(cfg)
                if not cell_runs:
                    problems.append(f"{what}: its mixer has no state size {cell.get('state')}")
                    continue
                validate(cell_runs[0])
            except (HydraException, OmegaConfBaseException, ConfigError, ValueError) as e:
                problems.append(f"{what}: {str(e).splitlines()[0]}")
                continue
            runs += cell_runs
    return runs, problems


def _brief(record: dict) -> dict:
    m = record.get("metrics", {})
    cfg = record.get("config", {})
    out = {"key": record["key"], "status": record["status"], "mixer": cfg.get("architecture", {}).get("name"),
           "task": {k: cfg.get("task", {}).get(k) for k in ("seq_len", "num_kv_pairs")}, "lr": cfg.get("train", {}).get("lr"),
           "wall_time_s": record.get("wall_time_s")}  # fmt: skip
    if record["status"] == "ok":
        out.update(accuracy=m.get("accuracy"), val_accuracy=m.get("val_accuracy"), steps=m.get("steps"), stopped=m.get("stopped"))
    else:
        out["error"] = str(record.get("error", ""))[:300]
    return out


def _train_worker(tasks, events, deadline: float, threads: int, commit: str | None) -> None:
    """One training process: takes runs until none is left or the deadline passes; an interrupt
    (the job's end) stops the run in progress, which then writes nothing."""
    audit = install_audit()
    if sys.platform.startswith("linux"):  # end with the job's process, not orphaned
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    try:
        torch.set_num_threads(threads)
        pin_provenance(commit)
        from benchmarks.run import run_one

        while time.time() < deadline:
            item = tasks.get()
            if item is None:
                break
            index, cfg = item
            events.put(("start", index, None))
            record = run_one(cfg, check=False)
            events.put(("done", index, _brief(record)))
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            events.put(("imports", None, sorted(audit.missing)))


def train(job: Job, until: float) -> dict:
    import multiprocessing

    from benchmarks.config import single_run
    from benchmarks.store import Store, run_key

    runs, problems = compose_runs(job)
    store = Store(job.store)
    todo, already = [], []
    for cfg in runs:
        (already if store.exists(run_key(single_run(cfg))) else todo).append(cfg)
    result: dict = {"cells_invalid": problems, "runs_planned": len(runs), "already_recorded": len(already),
                    "done": [], "interrupted": [], "not_started": 0}  # fmt: skip
    job.log(f"train: {len(runs)} runs planned, {len(already)} already recorded, {len(todo)} to train; "
            f"{len(problems)} cell(s) invalid")  # fmt: skip
    for p in problems:
        job.log(f"train: {p}")
    if not todo:
        return result
    if until - time.monotonic() < 5:
        job.log("train: no time left to start a run")
        result["not_started"], result["next"] = len(todo), [_describe_run(c) for c in todo[:20]]
        return result
    workers = min(job.args.workers, len(todo))
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    tasks, events = ctx.Queue(), ctx.Queue()
    for index, cfg in enumerate(todo):
        tasks.put((index, cfg))
    for _ in range(workers):
        tasks.put(None)
    deadline = time.time() + (until - time.monotonic())
    procs = [ctx.Process(target=_train_worker, args=(tasks, events, deadline, threads, job.args.commit), daemon=True)
             for _ in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    job.log(f"train: {workers} process(es) x {threads} thread(s) until {max(until - time.monotonic(), 0):.0f} s from now")
    started: dict[int, str] = {}
    finished: set[int] = set()

    def handle(kind, index, payload):
        if kind == "start":
            started[index] = todo[index]["architecture"]["name"]
        elif kind == "done":
            finished.add(index)
            result["done"].append(payload)
            acc = payload.get("accuracy")
            job.log(f"train: [{payload['status']}] {payload['mixer']} {payload['task']} lr={payload['lr']:g}"
                    + (f" accuracy={acc:.3f} after {payload['steps']} steps ({payload['stopped']})" if acc is not None else "")
                    + (f" {payload.get('error', '')}" if payload["status"] != "ok" else ""))  # fmt: skip
        elif kind == "imports":
            job.audit.missing.update(payload)

    last_pack = time.monotonic()
    while any(p.is_alive() for p in procs) and time.monotonic() < until:
        with contextlib.suppress(queue.Empty):
            handle(*events.get(timeout=0.5))
        if time.monotonic() - last_pack > 60:
            job.summary["train"] = result
            job.pack()
            last_pack = time.monotonic()
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    grace = time.monotonic() + 15
    while any(p.is_alive() for p in procs) and time.monotonic() < grace:  # read on: a worker exits once its messages are out
        with contextlib.suppress(queue.Empty):
            handle(*events.get(timeout=0.2))
    for p in procs:
        if p.is_alive():  # past the grace: a record is whole or absent either way (Store.write)
            p.kill()
        p.join()
    with contextlib.suppress(queue.Empty, EOFError, OSError):
        while True:
            handle(*events.get(timeout=0.2))
    result["interrupted"] = [_describe_run(todo[i]) for i in sorted(set(started) - finished)]
    result["not_started"] = len(todo) - len(started)
    result["next"] = [_describe_run(todo[i]) for i in range(len(todo)) if i not in started][:20]
    return result


def _describe_run(cfg: dict) -> str:
    arch, task = cfg["architecture"], cfg["task"]
    knobs = {k: v for k, v in arch.items() if k in ("d_state", "window_size", "state_dim", "filter_order", "feature_dim")}
    return f"{arch['name']} {knobs} L={task['seq_len']} kv={task['num_kv_pairs']} lr={cfg['train']['lr']:g}"


# ---------------------------------------------------------------- the job


def run_job(args: argparse.Namespace, audit: ImportAudit) -> int:
    job = Job(args, audit)
    pin_provenance(args.commit)
    from benchmarks.provenance import provenance

    job.summary["job"]["provenance"] = provenance(job.device)
    job.log(f"job: {job.device} ({job.summary['job']['provenance']['device']}), {args.minutes:g} min, phases {args.phases}; "
            f"{len(job.seeded)} records seeded from {args.seed_store or 'nothing'}")  # fmt: skip
    ceilings = None
    try:
        if "ceilings" in args.phases:
            ceilings = measure_ceilings(job)
            c = ceilings["metrics"]
            job.summary["ceilings"] = {k: c[k] for k in ("matmul_flops_per_s", "copy_bytes_per_s", "datasheet_bf16_flops")}
            job.log(f"ceilings: matmul {c['matmul_flops_per_s'] / 1e12:.3g} TFLOP/s, copy {c['copy_bytes_per_s'] / 1e9:.3g} GB/s")
            job.pack()
        if "throughput" in args.phases:
            share = args.throughput_share if "train" in args.phases else 1.0
            until = time.monotonic() + share * max(job.left() - job.pack_reserve, 0)
            job.summary["throughput"] = measure_throughput(job, ceilings, until)
            t = job.summary["throughput"]
            job.log(
                f"throughput: {len(t['ok'])} ok, {len(t['failed'])} failed, {len(t['not_measured'])} not measured (time), "
                f"{len(t['already_recorded'])} already recorded"
            )
            job.pack()
        if "train" in args.phases:
            job.summary["train"] = train(job, time.monotonic() + job.left() - job.pack_reserve)
            t = job.summary["train"]
            ok = sum(r["status"] == "ok" for r in t["done"])
            job.log(f"train: {len(t['done'])} runs recorded ({ok} ok), {len(t['interrupted'])} interrupted, "
                    f"{t['not_started']} not started")  # fmt: skip
    finally:
        files = job.pack()
        job.log(f"packed {job.summary['records_packed']} records into {', '.join(p.name for p in files)} in {job.out}")
        if audit.missing:
            job.log(f"imports the GPU machine lacks (add their wheels to WHEELS): {sorted(audit.missing)}")
        job.pack()  # the log's last lines are in, and the summary's elapsed time
        shutil.rmtree(job.work, ignore_errors=True)
    return 0


# ---------------------------------------------------------------- here: wheels, unpacking


def wheel_pins() -> dict[str, str]:
    out = {}
    for dist, pin in WHEELS.items():
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = pin
    return out


def fetch_wheels(target: Path) -> int:
    """Download (or build, where PyPI has only an sdist) the wheels of WHEELS into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    pins = wheel_pins()
    spec = lambda names: [f"{d}=={pins[d]}" for d in names]  # noqa: E731
    pip = [sys.executable, "-m", "pip"]
    pure = [d for d in pins if d not in SDIST_ONLY | BINARY]
    platforms = [a for p in GPU_PLATFORMS for a in ("--platform", p)]
    commands = [
        [*pip, "download", "--no-deps", "--only-binary", ":all:", "-d", str(target), *spec(pure)],
        [*pip, "download", "--no-deps", "--only-binary", ":all:", "--python-version", GPU_PYTHON, "--implementation", "cp",
         *platforms, "-d", str(target), *spec(sorted(BINARY))],
        [*pip, "wheel", "--no-deps", "-w", str(target), *spec(sorted(SDIST_ONLY))],
    ]  # fmt: skip
    for cmd in commands:
        print("+", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode:
            print(f"configuration error: `{' '.join(cmd[2:4])}` failed (above); {USAGE_HINT}", file=sys.stderr)
            return 1
    wheels = sorted(target.glob("*.whl"))
    print(f"{len(wheels)} wheels in {target}, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB")
    return 0


def unpack(source: Path, into: Path) -> int:
    """Extract the records of the packed files in `source` into the store `into`; each must read as a record."""
    from benchmarks.store import CorruptRecord, load_record

    tars = sorted(source.glob("records*.tar.gz"))
    if not tars:
        print(f"configuration error: argument --unpack: no records*.tar.gz in {source}; {USAGE_HINT}", file=sys.stderr)
        return 2
    count, bad = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for t in tars:
            with tarfile.open(t) as tar:
                tar.extractall(tmp, filter="data")  # no paths outside tmp
        for path in sorted(Path(tmp).rglob("*.json")):
            rel = path.relative_to(tmp)
            try:
                if rel.parent.name == "records":
                    load_record(path)
                else:  # the ceilings: JSON, not a store's record
                    json.loads(path.read_text())
            except (CorruptRecord, ValueError) as e:
                bad.append(f"{rel}: {e}")
                continue
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into / rel)
            count += 1
    print(f"{count} records unpacked into {into}" + (f"; {len(bad)} unreadable, left out: {bad}" if bad else ""))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    audit = install_audit()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv
    if args.fetch_wheels:
        return fetch_wheels(Path(args.fetch_wheels))
    if args.unpack:
        source = Path(args.unpack)
        if not source.is_dir():
            print(f"configuration error: argument --unpack: {source} is not a directory; {USAGE_HINT}", file=sys.stderr)
            return 2
        return unpack(source, Path(args.into) if args.into else SEED_STORE)
    return run_job(args, audit)


if __name__ == "__main__":
    sys.exit(main())
