"""Training-step speed of some mixers against one other mixer, measured in one process, interleaved.

    python benchmarks/perf/compare_mixers.py --against gla [--mixers deltanet,gated_deltanet,rwkv7]
        [--rounds 5] [--seconds 1] [--threads 1] [--clock cpu]

What it measures: the training step of benchmarks/perf/train_step.py (Zoology's model at the CPU
presets' shape: forward, loss, backward, clipping, AdamW) with each mixer in turn, as a ratio to the
same step with the `--against` mixer.

How: every model is built once, in this one process, and warmed up with two steps. Each round times,
for every mixer, the mixer and the reference one after the other for at least `--seconds` each,
alternating which of the two goes first from one measurement to the next, so a slow spell on a shared
machine falls on both about equally. It prints, per mixer, the median seconds per step of each over the
rounds (the reference's: its measurements beside that mixer) and the median over rounds of the per-round
ratio (mixer / reference: below 1 is faster).
`--clock cpu` times the process's CPU seconds instead of wall seconds: at one thread, a step's own time,
which another process holding the core does not inflate (use it on a loaded machine, and say so).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="gla", help="the reference mixer")
    parser.add_argument("--mixers", default="deltanet,gated_deltanet,rwkv7")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu", help="wall seconds, or the process's CPU seconds")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    from benchmarks.perf import train_step as ts

    torch.set_num_threads(args.threads)
    mixers = args.mixers.split(",")
    built = {}
    for name in dict.fromkeys([args.against, *mixers]):
        built[name] = ts.build(name)
        ts.time_steps(*built[name], min_seconds=0.0, min_steps=2)  # warm-up: first-call probes, kernel builds, allocator

    def measure(name: str) -> float:
        return statistics.median(ts.time_steps(*built[name], min_seconds=args.seconds, clock=args.clock))

    times = {m: [] for m in mixers}
    paired = {m: [] for m in mixers}  # the reference's times, measured beside each mixer's
    ratios = {m: [] for m in mixers}
    turn = 0
    for r in range(args.rounds):
        for mixer in mixers:
            order = [mixer, args.against] if turn % 2 == 0 else [args.against, mixer]
            turn += 1
            t = {name: measure(name) for name in order}
            times[mixer].append(t[mixer])
            paired[mixer].append(t[args.against])
            ratios[mixer].append(t[mixer] / t[args.against])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"| mixer | ms/step | {args.against} ms/step | ratio (median of per-round ratios) |")
    print("|---|---|---|---|")
    for m in mixers:
        this, ref = statistics.median(times[m]), statistics.median(paired[m])
        print(f"| {m} | {1e3 * this:.1f} | {1e3 * ref:.1f} | {statistics.median(ratios[m]):.2f} |")
    print(f"\n{args.threads} threads, {args.rounds} rounds, {args.clock} clock, {args.seconds} s per measurement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
