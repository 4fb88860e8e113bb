"""Records the tests write into stores: the least a record must hold to validate (benchmarks.record)."""

from __future__ import annotations

import copy

from benchmarks.store import group_key, run_key

CONFIG = {
    "architecture": {"name": "lru"},
    "task": {"name": "mqar", "seq_len": 32, "num_kv_pairs": 4},
    "model": {"d_model": 16, "n_layers": 2},
    "train": {"lr": 1e-3},
    "seed": 0,
}


def valid_record(config: dict | None = None, accuracy: float = 0.5, **fields) -> dict:
    """A successful run record of `config` (CONFIG by default), keyed by it; `fields` replace top-level fields."""
    cfg = copy.deepcopy(CONFIG if config is None else config)
    task = cfg["task"]
    record = {
        "key": run_key(cfg),
        "group": group_key(cfg),
        "config": cfg,
        "seed": cfg.get("seed", 0),
        "status": "ok",
        "started": "2026-01-01T00:00:00+00:00",
        "wall_time_s": 1.0,
        "provenance": {"commit": "0" * 40, "device": "cpu", "dirty": False},
        "metrics": {
            "accuracy": accuracy,
            "val_accuracy": accuracy,
            "val_loss": 1.0,
            "tss": 4,
            "ess": {"ess_mean": 2.0, "entropy_ess_mean": 1.5, "window": [8, 24]},
            "task": {"name": task["name"], "seq_len": task["seq_len"], "memory_demand": 4, "no_recall_accuracy": 0.25},
            "cache_bytes": 64,
            "parameters": 100,
            "steps": 4,
            "kernels": ["reference"],
        },
    }
    record.update(fields)
    return record
