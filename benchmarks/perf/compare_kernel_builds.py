"""Training-step speed with one C kernel built from two sources, in one process, interleaved.

    python benchmarks/perf/compare_kernel_builds.py OLD.c [NEW.c] --kernel selective_scan --mixers mamba,mamba2
        [--rounds 4] [--seconds 1.0] [--clock cpu]

For work on a kernel of `architectures/csrc/`: OLD.c and NEW.c (default: the checkout's own
`architectures/csrc/<kernel>.c`) are each compiled as `architectures.cpu_kernels` compiles (same flags, same
cache; a source beside the checkout's headers, e.g. a copy kept from `git show HEAD~1:...`, must sit in
`architectures/csrc/` or next to copies of the headers it includes). Per mixer, the same model takes the step
of benchmarks/perf/train_step.py (forward, loss, backward, clipping, AdamW at the CPU presets' shape, one
thread) with one build and then the other, alternating which goes first, for at least `--seconds` each.
It prints each build's median milliseconds per step and OLD's over NEW's (above 1: NEW is faster), after
checking that the two builds give the same loss and gradients to 1e-5 (a faster wrong kernel is no result).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_step as ts  # noqa: E402

from architectures import cpu_kernels  # noqa: E402


def _library(source: Path) -> ctypes.CDLL:
    compiler = cpu_kernels._compiler()
    if compiler is None:
        raise SystemExit("no C compiler found (set CC)")
    return ctypes.CDLL(str(cpu_kernels._build(source, compiler)))


def _gradients(model, x, y) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = ts.loss_fn(*ts.scored_logits(model, x, y))
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?")
    parser.add_argument("--kernel", default="selective_scan", help="the kernel's name in architectures/csrc")
    parser.add_argument("--mixers", default="mamba,mamba2")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--clock", choices=sorted(ts.CLOCKS), default="wall")
    args = parser.parse_args(argv)
    new = args.new or cpu_kernels.SOURCES / f"{args.kernel}.c"
    for path in (args.old, new):
        if not path.is_file():
            print(f"error: {path}: no such source file", file=sys.stderr)
            return 2
    torch.set_num_threads(1)
    builds = {"old": _library(args.old), "new": _library(new)}
    chosen = {"lib": builds["old"]}
    load = cpu_kernels.load
    cpu_kernels.load = lambda name: chosen["lib"] if name == args.kernel else load(name)
    try:
        for mixer in args.mixers.split(","):
            model, opt, x, y = ts.build(mixer)
            results = {}
            for name, lib in builds.items():
                chosen["lib"] = lib
                results[name] = _gradients(model, x, y)
            (loss_old, g_old), (loss_new, g_new) = results["old"], results["new"]
            worst = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(g_new, g_old, strict=True))
            if abs(loss_new - loss_old) > 1e-5 * abs(loss_old) or worst > 1e-5:
                print(f"{mixer}: the builds differ (loss {loss_old} vs {loss_new}, gradients up to {worst:.1e} apart)")
                return 1
            times = {"old": [], "new": []}
            for r in range(args.rounds):
                for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    chosen["lib"] = builds[name]
                    steps = ts.time_steps(model, opt, x, y, min_seconds=args.seconds, clock=args.clock)
                    times[name].append(statistics.median(steps) * 1e3)
            old, new_ms = statistics.median(times["old"]), statistics.median(times["new"])
            print(f"{mixer}: old {old:.2f} ms/step, new {new_ms:.2f} ms/step, old/new {old / new_ms:.3f} "
                  f"({args.rounds} rounds, {args.clock} clock; gradients within {worst:.0e})")  # fmt: skip
    finally:
        cpu_kernels.load = load
    return 0


if __name__ == "__main__":
    sys.exit(main())
