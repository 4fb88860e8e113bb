"""Registry of tasks: `build(name, **config)` and `names()`."""

from __future__ import annotations

from tasks.base import Task
from tasks.mad import MAD_TASKS
from tasks.mqar import MQAR

_TASKS: dict[str, type[Task]] = {t.name: t for t in (MQAR, *MAD_TASKS)}


def names() -> list[str]:
    return sorted(_TASKS)


def get(name: str) -> type[Task]:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(names())}")
    return _TASKS[name]


def build(name: str, **config) -> Task:
    cls = get(name)
    try:
        return cls(**config)
    except TypeError as e:
        raise ValueError(f"task {name!r}: bad parameters {config}: {e}") from None
