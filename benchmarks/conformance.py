"""Conformance: does a mixer honour the suite's interface? The same checks the reference mixers pass.

    python -m benchmarks.conformance                                  # every registered mixer
    python -m benchmarks.conformance architecture=examples.gated_ema:GatedEMA

Checks, each with what was measured against its tolerance; every check after `interface` runs in
train mode and again in eval mode (named "... (eval)"):
  interface     forward, operator, state_size, init_state and step exist
  shape         forward maps (B, L, d_model) to (B, L, d_model)
  input         forward depends on its input
  no lookahead  outputs before t do not change when only inputs from t on do
  operator      operator(x) is a MixerOperator(matrix, inputs, outputs) with (B, C, L[, L]) shapes
  mixes         the operator is not zero below the diagonal (an identity mixes no tokens)
  reproduces    outputs == matrix @ inputs, channel by channel
  readout       readout(matrix @ inputs, x) == forward(x), and readout uses matrix @ inputs
                (when the mixer has `readout`)
  frozen        with its input-dependent parts held (attention weights, gates, decays, step sizes:
                `frozen(x)`, the mixer's own forward path), channel a's operator equals the Jacobian
                d outputs_a(t) / d inputs_a(s) on and below the diagonal (skipped where not defined)
  jacobian      for a mixer linear in its input (`linear_in_input = True`), channel a's operator equals
                the Jacobian d y_a(t) / d x_a(s) of its forward below the diagonal
  tied          at least one of readout, frozen and jacobian ran: without one nothing ties the
                operator to the forward, and the check says what to add
  causal        the operator is zero above the diagonal
  ess<=tss      tolerance ESS never exceeds state_size(L)
  step          init_state/step reproduce forward token by token

Unknown command-line keys and unknown mixers are usage errors (exit 2); a failed check exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from architectures import registry
from architectures.base import decode, with_length

REQUIRED = ("forward", "operator", "state_size", "init_state", "step")


class ConformanceError(ValueError):
    """A mixer failed conformance; the message names each failed check and by how much."""


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    skipped: bool = False  # not applicable to this mixer: neither passes nor fails


@dataclass
class Report:
    mixer: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.skipped]

    def summary(self) -> str:
        """"passes all N conformance checks", "passes N of M conformance checks; skipped: ...", or "fails ..."."""
        if not self.passed:
            return "fails conformance: " + ", ".join(c.name for c in self.failures())
        ran, skipped = len(self.checks) - len(self.skipped()), self.skipped()
        if not skipped:
            return f"passes all {ran} conformance checks"
        return f"passes {ran} of {len(self.checks)} conformance checks; skipped: " + ", ".join(
            f"{c.name} ({c.detail.removeprefix('not checked: ')})" for c in skipped
        )

    def message(self) -> str:
        lines = [f"mixer {self.mixer!r}: " + (self.summary() if self.passed else "fails conformance")]
        lines += [f"  [{'skip' if c.skipped else 'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ConformanceError(self.message())


def _dense(matrix):
    return matrix.dense() if hasattr(matrix, "dense") else matrix


def _own_channel_jacobian(linear: Callable, channels: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """d f(u)_a(t) / d u_a(s), `(C, L, L)`, of a linear map f on `(N, C, L)` inputs, read off one
    batched call on one-hot inputs (one per channel and position)."""
    n = channels * length
    basis = torch.eye(n, dtype=dtype).view(n, channels, length)  # row c * L + s: channel c, position s
    responses = linear(basis).reshape(channels, length, channels, length)  # (c_in, s, c_out, t)
    return responses.diagonal(dim1=0, dim2=2).permute(2, 1, 0)  # (c, t, s)


def _frozen_jacobian(mixer: nn.Module, x: torch.Tensor, channels: int) -> torch.Tensor | None:
    """The own-channel Jacobian of example 0's frozen forward; None where the mixer defines no `frozen`."""
    if not callable(getattr(mixer, "frozen", None)):
        return None
    mix = mixer.frozen(x[:1].expand(channels * x.shape[1], *x.shape[1:]))
    return None if mix is None else _own_channel_jacobian(mix, channels, x.shape[1], x.dtype)


def check_mixer(
    factory: Callable[..., nn.Module] | str, d_model: int = 32, seq_len: int = 24, batch: int = 2, seed: int = 0, **config
) -> Report:
    """Build the mixer (a registry name, "module:Class", or a callable) and run every check on random input."""
    name = factory if isinstance(factory, str) else getattr(factory, "__name__", repr(factory))
    report = Report(name)
    add = report.checks.append
    try:
        build = registry.resolve(factory) if isinstance(factory, str) else factory
        torch.manual_seed(seed)
        mixer = build(d_model=d_model, **with_length(build, config, seq_len))
    except Exception as e:  # noqa: BLE001 - reported as the first failed check
        add(Check("build", False, f"could not build it with d_model={d_model}: {type(e).__name__}: {e}"))
        return report
    missing = [m for m in REQUIRED if not callable(getattr(mixer, m, None))]
    add(
        Check(
            "interface",
            not missing,
            "all methods present" if not missing else f"missing {', '.join(missing)} (see architectures/base.py)",
        )
    )
    if missing:
        return report
    # float64 where the mixer allows it, so that the tolerances test the algebra, not rounding
    try:
        mixer = mixer.double()
        dtype, tol = torch.float64, 1e-6
    except Exception:  # noqa: BLE001
        dtype, tol = torch.float32, 1e-3
    x = torch.randn(batch, seq_len, d_model, dtype=dtype, generator=torch.Generator().manual_seed(seed))

    for mode in ("train", "eval"):  # a mixer may behave differently in eval mode: both are checked
        mixer.train(mode == "train")
        if not _check_mode(mixer, x, tol, report, "" if mode == "train" else " (eval)"):
            break
    return report


def _check_mode(mixer: nn.Module, x: torch.Tensor, tol: float, report: Report, suffix: str) -> bool:
    """Every check of the mixer in its current mode (check names carry `suffix`); False where a check
    failed that every later one depends on."""
    batch, seq_len, _ = x.shape

    def add(check: Check) -> None:
        check.name += suffix
        report.checks.append(check)

    def attempt(check: str, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            add(Check(check, False, f"raised {type(e).__name__}: {e}"))
            return None

    with torch.no_grad():
        y = attempt("shape", lambda: mixer(x))
        if y is None:
            return False
        add(Check("shape", tuple(y.shape) == tuple(x.shape), f"forward output {tuple(y.shape)} for input {tuple(x.shape)}"))
        if tuple(y.shape) != tuple(x.shape):  # every later check compares with the forward: nothing to compare
            report.checks[-1].detail += f"; a mixer maps (batch, length, d_model) to the same shape, expected {tuple(x.shape)}"
            return False
        y_scale = max(1.0, y.abs().max().item())
        gen = torch.Generator().manual_seed(1)
        other = torch.randn(x.shape, dtype=x.dtype, generator=gen)
        # an operator of a mixer whose output does not depend on its input describes nothing it computes
        moved = attempt("input", lambda: (mixer(other) - y).abs().max().item())
        if moved is not None:
            add(Check("input", moved > tol * y_scale, f"max |forward(x') - forward(x)| for another input x' = {moved:.3g}"))
        # the first half of the output must not change when only the second half of the input does
        half = seq_len // 2
        future = torch.cat([x[:, :half], other[:, half:]], dim=1)
        peek = attempt("no lookahead", lambda: (mixer(future)[:, :half] - y[:, :half]).abs().max().item())
        if peek is not None:
            detail = f"max change of outputs before t={half} when inputs from t={half} on change: {peek:.3g}"
            add(Check("no lookahead", peek <= tol * y_scale, detail))
        op = attempt("operator", lambda: mixer.operator(x))
        if op is None:
            return False
        parts = [getattr(op, f, None) for f in ("matrix", "inputs", "outputs")]
        if any(p is None for p in parts):
            add(Check("operator", False, "operator(x) must return MixerOperator(matrix, inputs, outputs)"))
            return False
        matrix, inputs, outputs = parts
        T = attempt("operator", lambda: _dense(matrix))
        if T is None:
            return False
        shapes_ok = inputs.dim() == 3 and inputs.shape == outputs.shape and T.shape == (*inputs.shape, inputs.shape[-1])
        shapes_ok = shapes_ok and inputs.shape[0] == batch and inputs.shape[-1] == seq_len
        add(
            Check(
                "operator",
                shapes_ok,
                f"matrix {tuple(T.shape)}, inputs {tuple(inputs.shape)}, outputs {tuple(outputs.shape)}"
                + (
                    ""
                    if shapes_ok
                    else f"; expected matrix (B, C, L, L) and inputs/outputs (B, C, L) with B={batch}, L={seq_len}"
                ),
            )
        )
        if not shapes_ok:
            return False
        # an identity (or any operator zero below the diagonal) mixes no tokens: it cannot be a mixer's operator
        past = T.tril(-1).abs().max().item()
        mixes = past > tol * max(1.0, T.abs().max().item())
        detail = f"largest entry below the diagonal {past:.3g}"
        if not mixes:
            detail += "; operator(x) must return the mixer's token-mixing matrix, not the identity"
        add(Check("mixes", mixes, detail))
        product = (T @ inputs.unsqueeze(-1)).squeeze(-1)
        scale = outputs.abs().max().item() + 1e-12
        err = (product - outputs).abs().max().item()
        add(
            Check(
                "reproduces",
                err <= tol * max(1.0, scale),
                f"max |matrix @ inputs - outputs| = {err:.3g} (tolerance {tol * max(1.0, scale):.1g}, outputs up to {scale:.3g})",
            )
        )
        tied = []  # the checks that ran and tie the operator to the forward
        if callable(getattr(mixer, "readout", None)):
            r = attempt("readout", lambda: mixer.readout(product, x))
            if r is not None:
                err = (r - y).abs().max().item()
                # a readout that ignores matrix @ inputs would tie nothing
                nudge = torch.randn(product.shape, dtype=product.dtype, generator=gen) * max(1.0, scale)
                moved = attempt("readout", lambda: (mixer.readout(product + nudge, x) - r).abs().max().item())
                used = moved is not None and moved > tol * y_scale
                add(
                    Check(
                        "readout",
                        err <= tol * y_scale and used,
                        f"max |readout(matrix @ inputs) - forward| = {err:.3g}"
                        + ("" if used else "; readout ignores matrix @ inputs"),
                    )
                )
                tied.append("readout")
        checked = len(report.checks)
        frozen_map = attempt("frozen", lambda: _frozen_jacobian(mixer, x, T.shape[1]))
        if frozen_map is None and len(report.checks) == checked:  # none defined (a raise is reported as failed)
            add(Check("frozen", True, "not checked: the mixer defines no frozen(x) (architectures/base.py)", skipped=True))
        if frozen_map is not None:  # (channel a, t, s) of example 0
            lower = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
            err = (frozen_map[:, lower] - T[0][:, lower]).abs().max().item()
            add(
                Check(
                    "frozen",
                    err <= tol * max(1.0, T[0].abs().max().item()),
                    f"max |channel operator - Jacobian of the frozen forward| on and below the diagonal = {err:.3g}",
                )
            )
            tied.append("frozen")
        if getattr(mixer, "linear_in_input", False) and T.shape[1] == x.shape[-1]:
            # a mixer linear in its input: channel a's operator is d y_a(t) / d x_a(s) of its whole forward
            # off the diagonal (its affine offset removed), on channel-major (N, d, L) inputs
            def forward(u):
                return (mixer(u.transpose(1, 2)) - mixer(torch.zeros_like(u[:1].transpose(1, 2)))).transpose(1, 2)

            own = attempt("jacobian", lambda: _own_channel_jacobian(forward, x.shape[-1], seq_len, x.dtype))
            if own is not None:
                below = torch.ones(seq_len, seq_len, dtype=torch.bool).tril(-1)
                err = (own[:, below] - T[0][:, below]).abs().max().item()
                add(
                    Check(
                        "jacobian",
                        err <= tol * max(1.0, scale),
                        f"max |channel operator - Jacobian| below the diagonal = {err:.3g}",
                    )
                )
                tied.append("jacobian")
        add(
            Check(
                "tied",
                bool(tied),
                f"operator tied to forward by {', '.join(tied)}"
                if tied
                else "nothing ties operator(x) to forward(x): add readout(outputs, x) with forward(x) == readout(matrix @ "
                "inputs, x), or frozen(x) (the forward with its input-dependent parts held), or, for a mixer linear in its "
                "input, linear_in_input = True (architectures/base.py)",
            )
        )
        upper = T.triu(1).abs().max().item()
        add(Check("causal", upper <= tol, f"largest entry above the diagonal {upper:.3g}"))
        from benchmarks.ess import effective_state_size

        ess = effective_state_size(T).max().item()
        tss = attempt("ess<=tss", lambda: int(mixer.state_size(seq_len)))
        if tss is not None:
            add(Check("ess<=tss", ess <= tss, f"max tolerance ESS {ess} vs declared state_size({seq_len}) = {tss}"))
        stepped = attempt("step", lambda: decode(mixer, x)[0])
        if stepped is not None:
            err = (stepped - y).abs().max().item()
            add(Check("step", err <= tol * y_scale, f"max |step outputs - forward| = {err:.3g}"))
    return True


USAGE = """usage: python -m benchmarks.conformance [architecture=NAME|package.module:Class] [architecture.<param>=VALUE ...]
  without architecture=, every registered mixer is checked"""
SEE_HELP = "see python -m benchmarks.conformance --help"


def _parse(args: list[str]) -> tuple[str | None, dict]:
    """(the mixer named, its constructor config) from the command line; ValueError for anything else."""
    import yaml

    from benchmarks.config import SWEEP_KEYS
    from benchmarks.overrides import architecture_from_overrides, normalize

    config = {}
    for arg in normalize(args):
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or not key.startswith("architecture"):
            raise ValueError(f"unknown argument {arg!r}")
        if key in ("architecture", "architecture.name", "architecture._target_"):
            continue
        param = key.removeprefix("architecture.")
        if key == param or "." in param or not param.isidentifier():
            raise ValueError(f"unknown argument {arg!r}")
        if param not in SWEEP_KEYS:
            config[param] = yaml.safe_load(value)
    return architecture_from_overrides(args), config


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    try:
        target, config = _parse(args)
        if target:
            registry.resolve(target)
    except ValueError as e:  # an unknown key or mixer: a usage error, nothing checked
        print(f"conformance: {e}; {SEE_HELP}", file=sys.stderr)
        return 2
    if config and not target:
        print(f"conformance: architecture.<param> needs architecture=<mixer>; {SEE_HELP}", file=sys.stderr)
        return 2
    names = [target] if target else registry.names()
    failed = 0
    for name in names:
        report = check_mixer(name, **config)
        print(report.message())
        failed += not report.passed
    print(f"{len(names) - failed}/{len(names)} mixers conform")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
