"""The column registry: one entry per column of the leaderboard's rows (the CSV has them all, in
this order), with its label on the page, its number format, whether higher is better and what it
means. Adding a column: one `Column` here with its `read` (what of the record it shows; `None` for
a column a later stage computes), its key in `NARROW` if the task tables show it, and a line in
docs/leaderboard.md. Nothing else names a column's label or format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.record import PRUNED_IN_A_TIE


@dataclass(frozen=True)
class Column:
    key: str  # the row's (and the CSV's) column name
    label: str  # its header on the page and in leaderboard.md
    fmt: str | None = None  # a format for numbers; None: 3 significant digits, thousands separated
    higher_is_better: bool | None = None  # None: not a score (a setting, a count, provenance)
    description: str = ""
    read: Callable[[Any], Any] | None = None  # from `rows.Run`; None: computed by a later stage
    provenance: bool = False  # listed under the record link of its row


# a run that reached the cap is "capped" (still improving: it measures how fast the mixer learns, not
# what it can hold) when its best validation loss over the last quarter of its steps is this much
# (relative) below its best before, or its best accuracy came in that quarter
IMPROVING_DELTA = 0.01
# a run on a fixed training set "memorized" it when its final validation loss exceeds its training loss
# by this many nats (fresh sequences every step cannot be memorized)
MEMORIZED_GAP = 0.3


def cpu_of(provenance: dict) -> str:
    """The host CPU a record names (`benchmarks.provenance.cpu`), in short: capability and identity."""
    cpu = provenance.get("cpu")
    return f"{cpu['capability']} {cpu['identity']}" if cpu else ""


def trained_by(provenance: dict) -> str:
    """Who trained which steps of a run resumed from a state another commit or CPU trained
    (`provenance.trained_by`), in short; empty where one commit on one CPU trained it all."""
    cell = lambda s: f"{s['commit'][:10]} on {s.get('cpu') or 'a CPU not recorded'}" if s.get("commit") else "not recorded"  # noqa: E731
    return "; ".join(f"to {s['until']:,}: {cell(s)}" for s in provenance.get("trained_by") or [])


def continued_from(continued: dict | None) -> str:
    """Where a continuation took its run from, in words: past the cap, or past the rung a tie pruned it at."""
    if not continued:
        return ""
    if continued.get("why") == PRUNED_IN_A_TIE:
        return f"{PRUNED_IN_A_TIE} at {continued['cap']:,} steps, trained on"
    return f"past the cap of {continued['cap']:,} steps"


def main_evaluations(history: list[dict]) -> list[dict]:
    """A run's evaluations while it trained, those of its final cooldown left out."""
    return [h for h in history if h.get("phase", "train") == "train"]


def still_improving(history: list[dict]) -> bool:
    """Whether a run's validation curve was still improving over the last quarter of its training steps."""
    main = main_evaluations(history)
    if len(main) < 4:
        return True  # too short a curve to call it flat
    cut = main[-1]["step"] * 3 / 4
    before = [h for h in main if h["step"] <= cut]
    after = [h for h in main if h["step"] > cut]
    if not before or not after:
        return True
    loss_before, loss_after = min(h["val_loss"] for h in before), min(h["val_loss"] for h in after)
    acc_before, acc_after = max(h["val_accuracy"] for h in before), max(h["val_accuracy"] for h in after)
    return loss_after < loss_before * (1 - IMPROVING_DELTA) or acc_after > acc_before


def ended(m: dict) -> str:
    """Why a run ended, as the page says it: `metrics.stopped`, with a run that reached the cap while
    still improving marked "capped"."""
    stopped = m.get("stopped", "")
    if stopped == "budget" and still_improving(m.get("history", [])):
        return "capped"
    return stopped


def sequences(r) -> float:
    """Training sequences a run saw (records before `metrics.sequences`: steps x batch size)."""
    seen = r.m.get("sequences")
    if seen is not None:
        return float(seen)
    batch = r.cfg["train"].get("batch_size")
    return float(r.m["steps"]) * batch if batch else float("nan")


def memorized(m: dict) -> str:
    """"yes" when a run on a fixed training set ends with a validation loss MEMORIZED_GAP above its
    training loss; "" on fresh sequences or without the losses."""
    train, val = m.get("final_train_loss"), m.get("final_val_loss")
    if m.get("train_set") is None or train is None or val is None:
        return ""
    return "yes" if val - train > MEMORIZED_GAP else "no"


def _c(key, label=None, fmt=None, higher=None, description="", read=None, provenance=False) -> Column:
    return Column(key, label or key, fmt, higher, description, read, provenance)


COLUMNS: list[Column] = [
    _c("group", description="the run's group: every setting but the learning rate", read=lambda r: r.group),
    _c("design", description="the group without its seed", read=lambda r: r.design),
    _c("protocol", description="what a learning-rate grid is shared by", read=lambda r: r.protocol),
    _c("mixer", description="the token mixer", read=lambda r: r.mixer),
    _c("backbone", description="the model around the mixer", read=lambda r: r.backbone),
    _c("task", read=lambda r: r.task["name"]),
    _c("level", read=lambda r: r.level),
    _c("setting", description="the task's length and memory demand", read=lambda r: r.setting),
    _c("seq_len", read=lambda r: r.task["seq_len"]),
    _c("memory_demand", read=lambda r: r.task["memory_demand"]),
    _c("state", description="the state-size knob and its value", read=lambda r: r.state),
    _c("state_value", description="the state knob's value as a number (empty where the mixer's default is used)",
       read=lambda r: r.state_value),
    _c("accuracy", "accuracy", "{:.3f}", True, "test accuracy of the best run on validation", lambda r: r.m["accuracy"]),
    _c("no_recall", "no-recall baseline", "{:.3f}", None, "accuracy without recall",
       lambda r: r.task.get("no_recall_accuracy", float("nan"))),
    _c("test_sequences", description="the test sequences the accuracy is measured on",
       read=lambda r: r.cfg.get("data", {}).get("num_test", float("nan"))),
    _c("val_accuracy", "val accuracy", "{:.3f}", True, "what the best run is chosen on",
       lambda r: r.m.get("val_accuracy", float("nan"))),
    _c("val_loss", higher=False, read=lambda r: r.m.get("val_loss", float("nan"))),
    _c("lr", "lr", "{:.2g}", read=lambda r: r.cfg["train"]["lr"]),
    _c("ess", "ESS", "{:.2f}", True, "headline-tolerance ESS per channel", lambda r: r.ess),
    _c("ess_total", "ESS summed", "{:,.0f}", True, "ESS summed over the mixer layers' channels",
       lambda r: r.ess * r.channels),
    _c("entropy_ess", "entropy ESS", "{:.2f}", True, read=lambda r: r.m["ess"]["entropy_ess_mean"]),
    _c("ess_machine", higher=True, read=lambda r: r.m["ess"]["ess_mean"]),
    _c("ess_init", "ESS at init", "{:.2f}", description="headline ESS of the model as initialized (validation examples)",
       read=lambda r: r.ess_init),
    _c("ess_early", "ESS early", "{:.2f}", description="headline ESS at the first evaluation that measured it (ess_early_step)",
       read=lambda r: r.ess_early),
    _c("ess_early_step", description="the step of ess_early", read=lambda r: r.early_step),
    _c("tss", "TSS", description="the state size that bounds ESS", read=lambda r: r.m["tss"]),
    _c("utilization", "ESS/TSS", "{:.3f}", read=lambda r: r.ess / r.m["tss"] if r.m["tss"] else float("nan")),
    _c("bound", description="the largest the headline ESS can be", read=lambda r: r.bound),
    _c("cache_bytes", description="decoding state in bytes", read=lambda r: r.m["cache_bytes"], provenance=True),
    _c("parameters", read=lambda r: r.m["parameters"], provenance=True),
    _c("steps", read=lambda r: r.m["steps"], provenance=True),
    _c("stopped", description="why training stopped", read=lambda r: r.m.get("stopped", ""), provenance=True),
    _c("continued", description="trained further (`continue_to`): past its group's cap, or a rate the search pruned in "
       "a tie with one it promoted (their validation accuracies within sampling noise, its loss the lower)",
       read=lambda r: continued_from(r.m.get("continued")), provenance=True),
    _c("parted_at", description="a continuation retrained from its first step: the step at which its validation curve "
       "parts from the capped run's (a new draw of the config, not that run trained further); empty: the same curve",
       read=lambda r: r.parted_at, provenance=True),
    _c("ended", "ended", description="solved, plateau, capped (the cap, still improving), budget (the cap, flat) or pruned",
       read=lambda r: ended(r.m)),
    _c("sequences", "sequences seen", "{:,.0f}", description="training sequences the run saw", read=sequences),
    _c("memorized", description="a fixed training set memorized (validation loss far above training loss)",
       read=lambda r: memorized(r.m), provenance=True),
    _c("seed", read=lambda r: r.record["seed"], provenance=True),
    _c("commit", read=lambda r: r.prov["commit"][:10] + ("+dirty" if r.prov.get("dirty") else ""), provenance=True),
    _c("device", read=lambda r: r.prov["device"], provenance=True),
    _c("cpu", description="the host CPU: the vector instructions PyTorch dispatches to and its identity (a hash of its "
       "model and flags, which the C kernels are compiled for); runs of one config on CPUs of another identity can part. "
       "Empty: recorded before records named it", read=lambda r: cpu_of(r.prov), provenance=True),
    _c("trained_by", "trained by", description="a run resumed from a state that another commit or CPU trained: the "
       "commit and CPU identity that trained each stretch of its steps (commit and cpu name the last); empty: one "
       "commit on one CPU trained it all", read=lambda r: trained_by(r.prov), provenance=True),
    _c("kernels", read=lambda r: ",".join(r.m["kernels"]), provenance=True),
    _c("wall_time_s", read=lambda r: r.record["wall_time_s"], provenance=True),
    _c("run_seconds", "run (s)", "{:,.0f}", description="the run's own training and measuring time, with that of the "
       "capped runs it trains further (a group's runs share wall_time_s)", read=lambda r: r.seconds),
    _c("key", "record", description="the record's file name", read=lambda r: r.record["key"]),
    # computed from the rows by later stages
    _c("lr_grid", description="the learning rates of the group", provenance=True),
    _c("grid_spread", description="test accuracy's range over the grid", provenance=True),
    _c("learned", "learned", description="yes: above the no-recall baseline by the learned margin; below baseline: "
       "under it by more than sampling noise over the test sequences; else not learned"),
    _c("forward_tokens_per_s", description="measured forward throughput", provenance=True),
    _c("state_use", "state use", description="saturated, collapsed or neither"),
]  # fmt: skip
BY_KEY = {c.key: c for c in COLUMNS}

# the task tables' columns, in their order: what a reader compares (provenance sits in the record cell)
NARROW = ["mixer", "backbone", "state", "tss", "setting", "accuracy", "no_recall", "learned", "val_accuracy", "lr",
          "sequences", "ended", "ess", "ess_total", "entropy_ess", "utilization", "state_use", "key"]  # fmt: skip
# the record cell's lines, in their order
PROVENANCE_ORDER = ["commit", "device", "cpu", "trained_by", "kernels", "seed", "steps", "stopped", "continued", "parted_at",
                    "memorized", "lr_grid", "grid_spread", "parameters", "cache_bytes", "forward_tokens_per_s",
                    "wall_time_s"]  # fmt: skip
assert set(PROVENANCE_ORDER) == {c.key for c in COLUMNS if c.provenance}

RUN_COLUMNS = [c.key for c in COLUMNS if c.read is not None]  # a run row's columns
TABLE = {k: BY_KEY[k].label for k in NARROW}  # key -> label of the task tables
PROVENANCE = PROVENANCE_ORDER

# the other tables' measured columns, by label
OTHER_FORMATS = {
    "hours": "{:.1f}", "median run (s)": "{:.0f}", "ESS (machine precision)": "{:.2f}", "ESS/bound": "{:.3f}",
    "bound": "{:.1f}", "ESS/demand": "{:.2f}", "forward tok/s": "{:,.0f}", "MAD score": "{:.3f}",
    "score, all its settings": "{:.3f}", "mean ESS/bound": "{:.3f}", "median spread": "{:.3f}", "mean run (s)": "{:.0f}",
    "steps share": "{:.1%}", "evaluation share": "{:.1%}", "ess over training share": "{:.1%}",
    "final ess share": "{:.1%}", "largest spread": "{:.3f}", "CPU hours": "{:.2f}", "hours per group": "{:.2f}",
    "Spearman within settings": "{:.2f}", "accuracy before": "{:.3f}", "accuracy now": "{:.3f}",
    "sequences before": "{:,.0f}", "load": "{:.1f}", "sequences now": "{:,.0f}", "attention's lowest accuracy": "{:.3f}",
    "low": "{:.2f}", "high": "{:.2f}", "step": "{:,.0f}",
}  # fmt: skip
FORMATS = {**{c.label: c.fmt for c in COLUMNS if c.fmt}, **OTHER_FORMATS}  # label -> format
