"""Results store: one JSON record per run, keyed by a hash of the run's config.

Records are written atomically (a temp file in the same directory, then
os.replace), so a reader or a killed writer never leaves a half-written record
behind and concurrent workers never corrupt each other's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

# Config keys that say where or how to run, not what is measured: not part of a run's identity.
NON_IDENTITY_KEYS = ("store", "device", "progress", "workers")


def run_key(config: dict) -> str:
    ident = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def group_key(config: dict) -> str:
    """The key shared by the runs of one group: the same config at every learning rate of its grid."""
    return run_key({**config, "train": {k: v for k, v in config["train"].items() if k != "lr"}})


def design_key(config: dict) -> str:
    """The key shared by a group's seed replicates: its group key with the seed left out."""
    return group_key({k: v for k, v in config.items() if k != "seed"})


def protocol_key(config: dict) -> str:
    """What two runs of different mixers must share to be compared: the task setting, the model's width
    and depth, the data and the training budget (every rate of a grid: the learning rate left out)."""
    train = {k: v for k, v in config.get("train", {}).items() if k != "lr"}
    return run_key({"task": config.get("task"), "model": config.get("model"), "data": config.get("data"), "train": train})


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"

    def path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def write(self, record: dict) -> Path:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(record["key"])
        fd, tmp = tempfile.mkstemp(dir=self.records_dir, prefix=f".{record['key']}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True, allow_nan=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read(self, key: str) -> dict:
        return json.loads(self.path(key).read_text())

    def records(self) -> list[dict]:
        if not self.records_dir.exists():
            return []
        out = []
        for p in sorted(self.records_dir.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except json.JSONDecodeError:  # not ours: records are only ever replaced whole
                continue
        return out
