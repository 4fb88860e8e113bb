"""This suite's Based against Zoology's, at the same config, measured in one process, interleaved.

    git clone https://github.com/HazyResearch/zoology /tmp/zoology     # or any checkout of it
    pip install einops opt_einsum                                       # what zoology/mixers/based.py imports
    python benchmarks/perf/compare_zoology_based.py /tmp/zoology [--threads 2] [--rounds 7] [--view linear]

Both mixers are Based's linear-attention layer with the 2nd-order Taylor feature map, feature_dim 16,
one head, d_model 64, no rotary, the causal training view (Zoology's `train_view`, default "linear":
its pure-PyTorch cumulative-sum path when its CUDA kernel is absent, as on a CPU). Timed, at the CPU
presets' shape (batch 32, L 64): the mixer's forward + backward alone, and the whole training step
with the mixer inside this suite's 2-layer model (benchmarks/perf/train_step.py: forward, loss,
backward, clipping, AdamW). Each round times both for at least `--seconds`, alternating which goes
first; it prints the medians and the median per-round ratio (> 1: this suite's is faster). The
outputs are checked to agree first (same weights copied across), so the two compute the same thing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from architectures import registry  # noqa: E402
from benchmarks.perf import train_step  # noqa: E402


def zoology_based(checkout: Path, view: str, d_model: int):
    import importlib.util
    import types

    sys.path.insert(0, str(checkout))
    if "wandb" not in sys.modules and importlib.util.find_spec("wandb") is None:
        # zoology.utils imports wandb for its logging helpers; the Based layer never calls it
        sys.modules["wandb"] = types.ModuleType("wandb")
    from zoology.mixers.based import Based as ZoologyBased

    return ZoologyBased(
        d_model=d_model, l_max=train_step.SHAPE["seq_len"], feature_dim=16, num_heads=1, num_key_value_heads=1,
        feature_name="taylor_exp", train_view=view,
    )  # fmt: skip


def copy_weights(ours, theirs) -> None:
    """Zoology's projections take our weights, so both layers compute the same function."""
    with torch.no_grad():
        theirs.proj_q.weight.copy_(ours.q_proj.weight)
        theirs.proj_k.weight.copy_(ours.k_proj.weight)
        theirs.proj_v.weight.copy_(ours.v_proj.weight)
        theirs.proj_o.weight.copy_(ours.out_proj.weight)


def timed(fn, min_seconds: float) -> float:
    fn()
    times: list[float] = []
    while len(times) < 5 or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoology", type=Path, help="a checkout of HazyResearch/zoology")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--view", default="linear", choices=["linear", "quadratic"])
    args = parser.parse_args()
    if not (args.zoology / "zoology" / "mixers" / "based.py").exists():
        print(f"error: {args.zoology} is not a zoology checkout (no zoology/mixers/based.py)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    d = train_step.SHAPE["d_model"]
    torch.manual_seed(0)
    ours = registry.build("based", d_model=d, num_heads=1, feature_dim=16)
    theirs = zoology_based(args.zoology, args.view, d)
    copy_weights(ours, theirs)
    x = torch.randn(train_step.SHAPE["batch"], train_step.SHAPE["seq_len"], d, requires_grad=True)
    gap = (ours(x) - theirs(x)).abs().max().item()
    if gap > 1e-4:
        print(f"error: the two layers disagree by {gap:.3g}: not the same config", file=sys.stderr)
        return 1

    def mixer_step(m):
        return lambda: m(x).square().mean().backward()

    model, opt, tokens, targets = train_step.build("based")
    zmodel, zopt, _, _ = train_step.build("based")
    for block in zmodel.blocks:  # the same backbone, Zoology's mixer in each block
        z = zoology_based(args.zoology, args.view, d)
        copy_weights(block.mixer, z)
        block.mixer = z
    zopt = train_step.optimizer_for(zmodel)
    cases = {
        "mixer fwd+bwd": (mixer_step(ours), mixer_step(theirs)),
        "training step": (
            lambda: train_step.step(model, opt, tokens, targets),
            lambda: train_step.step(zmodel, zopt, tokens, targets),
        ),
    }
    print(f"Based vs Zoology's Based (train_view={args.view}), {args.threads} thread(s), batch {x.shape[0]}, "
          f"L {x.shape[1]}, d {d}; outputs agree to {gap:.1e}")  # fmt: skip
    for name, (mine, zoo) in cases.items():
        a, b, ratios = [], [], []
        for r in range(args.rounds):
            pair = (mine, zoo) if r % 2 == 0 else (zoo, mine)
            t = {fn: timed(fn, args.seconds) for fn in pair}
            a.append(t[mine])
            b.append(t[zoo])
            ratios.append(t[zoo] / t[mine])
        print(f"{name}: this suite {statistics.median(a) * 1e3:.2f} ms, Zoology {statistics.median(b) * 1e3:.2f} ms, "
              f"Zoology / this suite = {statistics.median(ratios):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
