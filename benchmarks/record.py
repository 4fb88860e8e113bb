"""A record file as a type: the one place that decides whether a file is a record.

A run record (`benchmarks.run`) and a throughput record (`benchmarks.throughput`, `kind: throughput`)
are pydantic models. They are strict on what the page and the analyses read (required fields,
finite accuracies in [0, 1], non-negative counts, the key matching the file name, the task a known
one) and permissive on the rest: records carry many more fields, and every extra one is kept.
`load(path)` returns the record as the plain dict it was written as, or raises CorruptRecord
naming what is wrong; `benchmarks.store.Store` reads every record through it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# strict: a string where a number belongs is refused, not converted (the page reads the raw dict)
_OPEN = ConfigDict(extra="allow", strict=True)

Accuracy = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
Measure = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
# keys name files (records/<key>.json) and land in HTML: hashes, or plain words in tests
Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class CorruptRecord(ValueError):
    """A record file that does not parse as a record; the message says why."""


def known_task(name: str) -> str:
    """`name` if it is a registered task, else ValueError: task names become file and anchor names."""
    from tasks import registry

    if name not in registry.names():
        raise ValueError(f"unknown task {name!r}")
    return name


class _Model(BaseModel):
    model_config = _OPEN


class TaskConfig(_Model):
    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_task(v)


class TrainConfig(_Model):
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class RunConfig(_Model):
    architecture: dict[str, Any]
    task: TaskConfig
    train: TrainConfig
    model: dict[str, Any] = {}


class MetricsTask(_Model):
    name: str
    seq_len: Annotated[int, Field(ge=1)]
    memory_demand: Count
    no_recall_accuracy: Accuracy | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_task(v)


class Ess(_Model):
    ess_mean: Measure
    entropy_ess_mean: Measure
    window: Annotated[list[Count], Field(min_length=2, max_length=2)]  # the interior splits [start, stop)


PRUNED_IN_A_TIE = "pruned in a tie"  # a continuation's `why` for a rate the search pruned in a tie (benchmarks.halving.tied)


class Continued(_Model):
    run: Key  # the run trained further
    cap: Count  # the steps it had trained before its cooldown: its cap, or the rung a tie pruned it at
    why: Literal["cap", "pruned in a tie"] = "cap"  # records before ties were continued: the cap
    # the seconds of the kept state it resumed from, which earlier records spent (0 if trained from its first
    # step): its `seconds` are the whole run's; None before it was recorded (`benchmarks.backfill --carried`)
    seconds_carried: float | None = None


class Metrics(_Model):
    accuracy: Accuracy
    val_accuracy: Accuracy
    tss: Count
    ess: Ess
    task: MetricsTask
    cache_bytes: Count
    parameters: Count
    steps: Count
    kernels: list[str]
    continued: Continued | None = None


class Stretch(_Model):
    until: Count  # the last step it trained
    commit: str | None = None  # None: a state saved before stretches were kept
    cpu: str | None = None  # the CPU's identity (`benchmarks.provenance.cpu`)


class Provenance(_Model):
    commit: str
    device: str
    cpu: dict[str, str | None] | None = None  # the host CPU (`benchmarks.provenance.cpu`); None before 2026-12-07
    trained_by: list[Stretch] | None = None  # who trained which steps, where more than one did (`benchmarks.run.trained_by`)


class RunRecord(_Model):
    key: Key
    status: Literal["ok", "failed"]
    config: RunConfig
    provenance: Provenance
    seed: int
    wall_time_s: Measure
    metrics: Metrics | None = None
    error: str = ""
    continues: Key | None = None  # the run this one trained further (`continue_to`): its row replaces it

    @model_validator(mode="after")
    def _ok_has_metrics(self):
        if self.status == "ok" and self.metrics is None:
            raise ValueError("status ok without metrics")
        return self


class ThroughputMetrics(_Model):
    mixer: str
    kernel: str
    seq_len: Annotated[int, Field(ge=1)]
    batch: Annotated[int, Field(ge=1)]
    forward_s: Measure
    forward_tokens_per_s: Measure
    forward_backward_tokens_per_s: Measure
    prefill_tokens_per_s: Measure
    decode_tokens_per_s: Measure
    peak_memory_bytes: Measure
    forward_flops_per_s: Measure


class ThroughputRecord(_Model):
    key: Key
    kind: Literal["throughput"]
    status: Literal["ok", "failed"]
    config: dict[str, Any]
    provenance: Provenance
    metrics: ThroughputMetrics | None = None

    @model_validator(mode="after")
    def _ok_has_metrics(self):
        if self.status == "ok" and self.metrics is None:
            raise ValueError("status ok without metrics")
        return self


def _why(error: ValidationError) -> str:
    """The first few problems, each as `field.path: message`, on one line."""
    parts = []
    for e in error.errors()[:3]:
        where = ".".join(str(p) for p in e["loc"]) or "record"
        msg = "missing" if e["type"] == "missing" else e["msg"]
        parts.append(f"{where}: {msg}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(record: Any, key: str | None = None) -> dict:
    """`record` itself where it is a valid record (with `key` where given), else CorruptRecord."""
    if not isinstance(record, dict):
        raise CorruptRecord("not a JSON object")
    model = ThroughputRecord if record.get("kind") == "throughput" else RunRecord
    try:
        model.model_validate(record)
    except ValidationError as e:
        raise CorruptRecord(f"not a valid record ({_why(e)})") from None
    if key is not None and record["key"] != key:
        raise CorruptRecord(f"its key {record['key']!r} is not its file name {key!r} (a copy of another record?)")
    return record


def load(path: Path) -> dict:
    """The record in `path` (its key must be the file's name), or CorruptRecord naming what is wrong.
    FileNotFoundError where the file is gone."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as e:  # a directory, a symlink loop, no permission
        raise CorruptRecord(f"cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptRecord("not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise CorruptRecord(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise CorruptRecord("nested too deeply") from None
    return validate(record, Path(path).stem)
