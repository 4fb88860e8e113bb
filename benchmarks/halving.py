"""Best of a learning-rate grid at a cost a sweep can pay: successive halving, and the grid extended
past an edge that wins.

Zoology and MAD report, per setting, the best model over a grid of learning rates, each trained until
it stops improving. Training every rate to convergence wastes most of the budget on rates that lose,
so the grid is searched by successive halving (Jamieson & Talwalkar 2016; the inner loop of
Hyperband and ASHA, Li et al. 2018, 2020): every rate trains to the first rung's step budget; the
rates still training are ranked on validation at that budget (accuracy, then loss) and the best
1/`promote` of them go on to the next rung, and so on up to the cap (`train.steps`). A run stops
earlier when it solves the task (then the group is done: nothing can beat it), or on a plateau.
Under the WSD schedule a promoted run continues where it was: no restart, no second warmup
(benchmarks/train.py).

If the best rate lies on an edge of the rates tried and the task is not solved, the grid is extended
by one step of its own spacing past that edge, and the halving is played again over all rates (the
runs already trained keep their progress; the decisions are replayed, so a run that the new rate
pushes out is not trained further), up to `extend` times. Every decision is a function of the
validation curves, which are a function of the config and the seed, so re-running a group reproduces
its choices. Every rate of the grid trains the first rung (each stops there early if it solves the
task), so each has a record; after it, the first run that solves ends the group.

`search` works on any runs with the Trainer's interface (`advance`, `stopped`, `history`, `best`),
so its decisions are tested on scripted curves (tests/test_protocol.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Search:
    """What a group's search did: the rates tried (the grid, then any extension), the rung budgets, how
    each run ended ("solved", "plateau", "budget": the cap, "pruned": not promoted at a rung, "failed")
    and the last rung each reached (-1: none)."""

    rates: list[float]
    budgets: list[int]
    promote: int
    extended: list[float] = field(default_factory=list)
    ended: dict[float, str] = field(default_factory=dict)
    rung: dict[float, int] = field(default_factory=dict)
    errors: dict[float, BaseException] = field(default_factory=dict)

    def summary(self, lr: float) -> dict:
        """The part of a run's record that says how the search treated it."""
        return {
            "rates": sorted(self.rates),
            "extended": sorted(self.extended),
            "rungs": self.budgets,
            "promote": self.promote,
            "rung": self.rung.get(lr, -1),
            "ended": self.ended.get(lr),
        }


def _evaluations(run, budget: int) -> list[dict]:
    """A run's validation evaluations up to `budget` steps, its cooldown's left out."""
    return [e for e in run.history if e["step"] <= budget and e.get("phase", "train") == "train"]


def score_at(run, budget: int) -> tuple[float, float]:
    """A run's validation (accuracy, loss) at its last evaluation at or before `budget` steps: the
    score it had at that rung, whatever it did later."""
    entries = _evaluations(run, budget)
    if not entries:
        return (-1.0, math.inf)
    return (entries[-1]["val_accuracy"], entries[-1]["val_loss"])


def best_at(run, budget: int) -> tuple[float, float]:
    """A run's best validation (accuracy, loss) up to `budget` steps: its first evaluation with the
    highest accuracy, as the Trainer keeps its best checkpoint."""
    entries = _evaluations(run, budget)
    if not entries:
        return (-1.0, math.inf)
    best = max(entries, key=lambda e: e["val_accuracy"])  # the first of equals
    return (best["val_accuracy"], best["val_loss"])


# how far apart two validation accuracies must lie, in standard errors of their difference, for a rung's
# ranking to rest on them rather than on sampling noise
TIE_STANDARD_ERRORS = 2.0


def tied(pruned, promoted, budget: int, scored: int) -> bool:
    """Whether a rate pruned at a rung (`budget` steps) could not be told from one promoted there: their
    validation accuracies within `TIE_STANDARD_ERRORS` standard errors of their difference (binomial, over
    the `scored` positions validation scores), and the pruned run's validation loss the lower. The rung's
    ranking (accuracy, then loss) then rested on noise, against the loss. Before MQAR's phase transition
    every rate sits near the no-recall accuracy and the transition comes late for some mixers (Mamba at
    L 64, kv 8: after ~15,000 steps), so such a tie can prune the rate that would have solved the task."""
    (a, loss_a), (b, loss_b) = score_at(pruned, budget), score_at(promoted, budget)
    if a < 0 or b < 0:
        return False
    se = math.sqrt((a * (1 - a) + b * (1 - b)) / scored)
    return abs(a - b) <= TIE_STANDARD_ERRORS * se and loss_a < loss_b


def _rank_key(score: tuple[float, float]) -> tuple[float, float]:
    return (-score[0], score[1])


def stretches(run, budget: int, stretch: int | None):
    """The steps to advance `run` to on its way to `budget`: `budget`, or with `stretch` first each
    multiple of `stretch` past the run's step (the same steps however often the run was resumed)."""
    while True:
        until = budget if not stretch else min(budget, (run.step // stretch + 1) * stretch)
        yield until
        if until >= budget or run.stopped is not None:
            return


def search(
    rates: list[float],
    make: Callable[[float], object],
    budgets: list[int],
    promote: int,
    extend: int = 0,
    saved: Callable[[float, object], None] | None = None,
    stretch: int | None = None,
) -> tuple[Search, dict[float, object]]:
    """Search the grid `rates` by successive halving over the step `budgets` (the rungs, then the cap);
    `make(lr)` builds a run (a Trainer, possibly restored from a checkpoint), `saved(lr, run)` is called
    after each stretch of training (to checkpoint it): each advance to a budget, or with `stretch` each
    multiple of `stretch` steps on the way, so that a killed search loses at most that many steps of a
    run. Returns the search and the runs by rate."""
    result = Search(rates=sorted(rates), budgets=list(budgets), promote=promote)
    runs: dict[float, object] = {}
    # the budget each run has been advanced to so far: every decision reads a run as it stood there, so a
    # search replayed over runs restored at a later state (a group killed while writing its records)
    # makes the decisions the first one made
    reached: dict[float, int] = {}

    def advance(lr: float, budget: int) -> None:
        if lr in result.errors:
            return
        if lr not in runs:
            runs[lr] = make(lr)
        reached[lr] = max(reached.get(lr, 0), budget)
        for until in stretches(runs[lr], budget, stretch):
            try:
                runs[lr].advance(until)
            except Exception as e:  # noqa: BLE001 - a NaN or a crash fails this run; the group goes on
                result.errors[lr] = e
                return
            if saved is not None:
                saved(lr, runs[lr])

    def stopped(lr: float) -> str | None:
        run = runs[lr]
        return run.stopped if run.stopped is not None and run.step <= reached[lr] else None

    def solved() -> bool:
        return any(stopped(lr) == "solved" for lr in runs if lr not in result.errors)

    def play() -> None:
        alive = list(result.rates)
        for r, budget in enumerate(result.budgets):
            for lr in alive:
                advance(lr, budget)
                if lr not in result.errors:
                    result.rung[lr] = max(result.rung.get(lr, -1), r)
                if r and solved():  # every rate trains the first rung: each has a record
                    return
            if solved():
                return
            alive = [lr for lr in alive if lr not in result.errors and stopped(lr) is None]
            if r + 1 == len(result.budgets) or not alive:
                return
            alive.sort(key=lambda lr, b=budget: _rank_key(score_at(runs[lr], b)))
            alive = alive[: math.ceil(len(alive) / promote)]

    play()
    while extend > len(result.extended) and not solved():
        ok = [lr for lr in result.rates if lr not in result.errors]
        if len(ok) < 2:
            break
        best = min(ok, key=lambda lr: _rank_key(best_at(runs[lr], reached[lr])))
        lo, hi = result.rates[0], result.rates[-1]
        if best == hi:
            new = hi * hi / result.rates[-2]
        elif best == lo:
            new = lo * lo / result.rates[1]
        else:
            break
        new = float(f"{new:.3g}")
        result.rates = sorted([*result.rates, new])
        result.extended.append(new)
        play()
    for lr in result.rates:
        if lr in result.errors:
            result.ended[lr] = "failed"
        elif lr in runs:
            result.ended[lr] = runs[lr].stopped or "pruned"
    return result, runs
