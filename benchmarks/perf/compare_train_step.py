"""Training-step speed of this checkout against another one, measured in one run, interleaved.

    python benchmarks/perf/compare_train_step.py /path/to/other/checkout [--mixers attention,mamba] [--rounds 5]
        [--threads 1] [--clock cpu]
    python benchmarks/perf/compare_train_step.py --against gla --mixers h3 [...]

`--against MIXER` instead times each of `--mixers` against MIXER, both in this checkout (two workers of
it, the same method): the speedup column is MIXER's time over the mixer's.

On a shared 2-core machine two identical runs minutes apart can differ 2-3x, so absolute times
taken at different moments are not comparable. Here one worker process per checkout stays alive
(each imports its own checkout's code and builds every model once); the driver asks them in turn,
alternating which goes first, to time the same step (benchmarks/perf/train_step.py: forward, loss,
backward, clipping, AdamW at the CPU presets' shape) for at least `--seconds` each; only one
measures at any time. It prints, per mixer, the median seconds per step of each checkout and the
median over rounds of the per-round ratio, then the geometric mean of the ratios. `--clock cpu`
times CPU seconds instead of wall seconds: at one thread, a step's own time, which another process
holding the core does not inflate (use it on a loaded machine, and say so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]

WORKER = r"""
import importlib.util, json, statistics, sys, torch
torch.set_num_threads(int(sys.argv[2]))
spec = importlib.util.spec_from_file_location("train_step", sys.argv[1])
ts = importlib.util.module_from_spec(spec); spec.loader.exec_module(ts)
built = {}
clock = sys.argv[3]
for line in sys.stdin:
    mixer, seconds = line.split()
    if mixer not in built:
        built[mixer] = ts.build(mixer)
        ts.time_steps(*built[mixer], min_seconds=0.0, min_steps=2)  # warm-up: first-call probes, allocator
    times = ts.time_steps(*built[mixer], min_seconds=float(seconds), clock=clock)
    print(json.dumps({"mixer": mixer, "median": statistics.median(times), "steps": len(times)}), flush=True)
"""


def start_worker(checkout: Path, threads: int, clock: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(HERE.parent / "train_step.py"), str(threads), clock],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(threads)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def ask(worker: subprocess.Popen, mixer: str, seconds: float) -> float:
    worker.stdin.write(f"{mixer} {seconds}\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    if not line:
        raise RuntimeError(f"worker died while timing {mixer}")
    return json.loads(line)["median"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "other", type=Path, nargs="?", help="the checkout to compare with (e.g. a git worktree of an older commit)"
    )
    parser.add_argument("--against", metavar="MIXER", help="compare with this mixer of this checkout instead of another checkout")
    parser.add_argument("--mixers", default="attention,sliding_window,linear_attention,gla,wla,mamba,mamba2,hyena,lru,based")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall seconds, or the process's CPU seconds")
    args = parser.parse_args()
    if (args.other is None) == (args.against is None):
        print("error: give either another checkout or --against MIXER", file=sys.stderr)
        return 2
    if args.other is not None and not (args.other / "architectures" / "backbone.py").exists():
        print(f"error: {args.other} is not a checkout of this suite (no architectures/backbone.py)", file=sys.stderr)
        return 2
    mixers = args.mixers.split(",")
    other_path = ROOT if args.against else args.other.resolve()
    workers = {name: start_worker(path, args.threads, args.clock) for name, path in (("this", ROOT), ("other", other_path))}
    times = {(m, w): [] for m in mixers for w in workers}
    ratios = {m: [] for m in mixers}
    try:
        for r in range(args.rounds):
            for i, mixer in enumerate(mixers):
                order = ["this", "other"] if (r + i) % 2 == 0 else ["other", "this"]
                t = {w: ask(workers[w], args.against if w == "other" and args.against else mixer, args.seconds) for w in order}
                for w in workers:
                    times[(mixer, w)].append(t[w])
                ratios[mixer].append(t["other"] / t["this"])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()
    other_name = f"{args.against} (this checkout)" if args.against else args.other
    print(f"| mixer | this checkout ms/step | {other_name} ms/step | speedup (median of per-round ratios) |")
    print("|---|---|---|---|")
    for m in mixers:
        this, other = statistics.median(times[(m, "this")]), statistics.median(times[(m, "other")])
        print(f"| {m} | {1e3 * this:.1f} | {1e3 * other:.1f} | {statistics.median(ratios[m]):.2f}x |")
    geo = math.exp(statistics.fmean(math.log(statistics.median(ratios[m])) for m in mixers))
    setting = f"{args.threads} threads, {args.rounds} rounds, {args.clock} clock"
    print(f"\ngeometric mean speedup over {len(mixers)} mixers: {geo:.2f}x ({setting})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
