"""Does `torch.compile` pay back its compile time over a run? Per mixer, at the CPU presets' training
step (benchmarks/perf/train_step.py): the compile time (the first compiled step, minus an eager
step), the eager and compiled steady-state step times, measured interleaved, and the steps a run
needs before compiling is ahead (never, where the compiled step is not faster).

    python -m benchmarks.perf.compile_payback                  # every mixer, one thread as the sweep's workers
    python -m benchmarks.perf.compile_payback --mixers mamba2,based --threads 2

Each mixer is measured in a process of its own, as a run of the sweep compiles in its own: one process
compiling mixer after mixer hits dynamo's recompile limit and measures the later ones eagerly (a
`torch._dynamo.reset()` between them does not prevent it). The compile time is the first compiled
step's, with inductor's on-disk cache as the machine has it: a sweep's later runs find it warm too.
Under the converged protocol a run trains from 1,000 steps (the first rung) to the cap and beyond
(`continue_to`): a mixer would be compiled where its break-even lies well inside that; one whose
compiled step is slower is trained eagerly.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from architectures import registry
from benchmarks.perf import train_step


def _times(model, opt, x, y, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step.step(model, opt, x, y)
        out.append(time.perf_counter() - start)
    return out


def measure(mixer: str, rounds: int, steps: int) -> dict:
    eager, opt, x, y = train_step.build(mixer)
    compiled_model, copt, _, _ = train_step.build(mixer)
    _times(eager, opt, x, y, 2)  # warm-up
    first_eager = statistics.median(_times(eager, opt, x, y, 3))
    compiled = torch.compile(compiled_model)
    try:
        start = time.perf_counter()
        train_step.step(compiled, copt, x, y)
        compile_s = time.perf_counter() - start - first_eager
        _times(compiled, copt, x, y, 2)  # later recompiles (e.g. the optimizer's) count as warm-up
    except Exception as e:  # noqa: BLE001 - a mixer inductor cannot lower (the LRU's complex scan)
        return {"mixer": mixer, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    ratios, e_all, c_all = [], [], []
    for r in range(rounds):  # interleaved, alternating which goes first
        pair = [("e", eager, opt), ("c", compiled, copt)]
        for name, model, o in pair if r % 2 == 0 else pair[::-1]:
            t = statistics.median(_times(model, o, x, y, steps))
            (e_all if name == "e" else c_all).append(t)
        ratios.append(e_all[-1] / c_all[-1])
    e, c = statistics.median(e_all), statistics.median(c_all)
    break_even = compile_s / (e - c) if e > c else float("inf")
    return {"mixer": mixer, "compile_s": compile_s, "eager_ms": 1e3 * e, "compiled_ms": 1e3 * c,
            "speedup": statistics.median(ratios), "break_even_steps": break_even}  # fmt: skip


def _row(r: dict) -> str:
    if "error" in r:
        return f"| {r['mixer']} | fails: {r['error']} | | | | |"
    even = "never" if r["break_even_steps"] == float("inf") else f"{r['break_even_steps']:,.0f}"
    cells = (r["mixer"], f"{r['compile_s']:.0f}", f"{r['eager_ms']:.1f}", f"{r['compiled_ms']:.1f}", f"{r['speedup']:.2f}x", even)
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixers", default=",".join(registry.names()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)  # one mixer, in a child process
    args = parser.parse_args()
    mixers = args.mixers.split(",")
    if args.row_only:
        torch.set_num_threads(args.threads)
        print(_row(measure(mixers[0], args.rounds, args.steps)), flush=True)
        return 0
    print(f"| mixer | compile s | eager ms/step | compiled ms/step | speedup | break-even steps ({args.threads} threads) |")
    print("|---|---|---|---|---|---|", flush=True)
    for mixer in mixers:
        child = [sys.executable, "-m", "benchmarks.perf.compile_payback", "--row-only", "--mixers", mixer,
                 "--threads", str(args.threads), "--rounds", str(args.rounds), "--steps", str(args.steps)]  # fmt: skip
        done = subprocess.run(child, capture_output=True, text=True)
        rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
        failed = f"| {mixer} | fails: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]} | | | | |"
        print(rows[-1] if rows else failed, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
