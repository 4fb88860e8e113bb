"""Results store: one JSON record per run, keyed by a hash of the run's config.

Records are written atomically (a temp file in the same directory, then
os.replace), so a reader or a killed writer never leaves a half-written record
behind and concurrent workers never corrupt each other's files. A record that
cannot be read anyway (not UTF-8, not JSON, not a record: copied in broken, cut
short by a full disk) is never taken for a finished run: it is named in one
warning line and moved to `records/corrupt/`, and its run is trained again.
A run being trained holds a claim (`records/.<key>.claim`), so that two sweeps
on one store never train the same run twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
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


class CorruptRecord(ValueError):
    """A record file that does not parse as a record; the message says why."""


def load_record(path: Path) -> dict:
    """The record in `path`, or CorruptRecord naming what is wrong with it."""
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptRecord("not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise CorruptRecord(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(record, dict):
        raise CorruptRecord("not a JSON object")
    missing = [k for k in ("key", "config", "status") if k not in record]
    if missing or not isinstance(record.get("config"), dict):
        raise CorruptRecord(f"not a run record (missing {', '.join(missing) or 'a config object'})")
    if record["status"] == "ok" and not isinstance(record.get("metrics"), dict):
        raise CorruptRecord("status ok without metrics")
    return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.corrupt_dir = self.records_dir / "corrupt"

    def path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def set_aside(self, path: Path, why: str) -> Path:
        """Move an unreadable record to records/corrupt/, with a warning line; its run counts as not done."""
        self.corrupt_dir.mkdir(parents=True, exist_ok=True)
        target = self.corrupt_dir / path.name
        os.replace(path, target)
        print(f"warning: {path}: {why}; moved to {target}, its run will be trained again", file=sys.stderr)
        return target

    def get(self, key: str) -> dict | None:
        """The run's record, or None where it is absent or unreadable (an unreadable one is set aside)."""
        path = self.path(key)
        try:
            return load_record(path)
        except CorruptRecord as e:
            self.set_aside(path, str(e))
        except (FileNotFoundError, NotADirectoryError):  # absent (or set aside by another process meanwhile)
            pass
        return None

    def exists(self, key: str) -> bool:
        """Whether the run's record is there and readable (an unreadable one is set aside: not done)."""
        return self.get(key) is not None

    def corrupt_count(self) -> int:
        return len(list(self.corrupt_dir.glob("*.json"))) if self.corrupt_dir.exists() else 0

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """Claim the run `key` for this process while the block runs: yields False where another live
        process holds it (a claim whose process has died on this host is taken over)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        lock = self.records_dir / f".{key}.claim"
        mine = False
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    host, pid, _ = lock.read_text().split(" ", 2)
                except (OSError, ValueError):
                    host, pid = "", "0"
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    lock.unlink(missing_ok=True)  # its process died: stale
                    continue
                break
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}")
            mine = True
            break
        try:
            yield mine
        finally:
            if mine:
                lock.unlink(missing_ok=True)

    def write(self, record: dict) -> Path:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(record["key"])
        fd, tmp = tempfile.mkstemp(dir=self.records_dir, prefix=f".{record['key']}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True, allow_nan=True)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide records on a shared store
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read(self, key: str) -> dict:
        return load_record(self.path(key))

    def records(self) -> list[dict]:
        """Every readable record; unreadable ones are set aside (`set_aside`), each with a warning."""
        if not self.records_dir.exists():
            return []
        out = []
        for p in sorted(self.records_dir.glob("*.json")):
            try:
                out.append(load_record(p))
            except CorruptRecord as e:
                self.set_aside(p, str(e))
            except FileNotFoundError:  # set aside by another process meanwhile
                continue
        return out
