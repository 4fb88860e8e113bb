"""Results store: one JSON record per run, keyed by a hash of the run's config.

Records are written atomically (a temp file in the same directory, then
os.replace), so a reader or a killed writer never leaves a half-written record
behind and concurrent workers never corrupt each other's files. A record that
cannot be read anyway (not UTF-8, not JSON, not a valid record as
`benchmarks.record` types it: copied in broken, cut short by a full disk, a
field missing, its key not its file name) is never taken for a finished run: it
is named in one warning line and moved to `records/corrupt/`, and its run is
trained again. A run being trained holds a claim (`records/.<key>.claim`), so
that two sweeps on one store never train the same run twice; an empty or
unparsable claim, or one whose process is gone, is taken over.
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

from benchmarks import record as record_type
from benchmarks.record import CorruptRecord  # noqa: F401  (raised by load_record; imported from here)

# Config keys that say where or how to run, not what is measured: not part of a run's identity.
NON_IDENTITY_KEYS = ("store", "device", "progress", "workers", "continue_to")


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


def load_record(path: Path) -> dict:
    """The record in `path`, or CorruptRecord naming what is wrong with it (`benchmarks.record`)."""
    return record_type.load(path)


class StoreError(OSError):
    """A store that cannot be read or written; the message says which path and why."""


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
        target = self.corrupt_dir / path.name
        n = 1
        while target.exists() or target.is_symlink():  # never over an earlier one (a directory cannot be replaced)
            target, n = self.corrupt_dir / f"{path.stem}.{n}{path.suffix}", n + 1
        try:
            self.corrupt_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except FileNotFoundError:  # set aside by another process meanwhile
            return target
        except OSError as e:  # a read-only store: skipped, not moved
            print(f"warning: {path}: {why}; skipped (cannot move it to {self.corrupt_dir}: {e.strerror})", file=sys.stderr)
            return path
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
        return len(list(self.corrupt_dir.glob("*.json"))) if self.corrupt_dir.is_dir() else 0

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[bool]:
        """Claim the run `key` for this process while the block runs: yields False where another live
        process holds it (a claim whose process has died on this host is taken over)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        lock = self.records_dir / f".{key}.claim"
        mine = False
        for _ in range(3):
            if self._place_claim(lock):
                mine = True
                break
            try:
                host, pid, _ = lock.read_text().split(" ", 2)
            except FileNotFoundError:  # released meanwhile: try again
                continue
            except (OSError, ValueError):  # empty or unparsable: no live claim writes one (see _place_claim)
                host, pid = None, ""
            stale = host is None or (host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)))
            if not stale:
                break
            print(f"warning: {lock}: {'unreadable' if host is None else f'its process {pid} is gone'}; taken over",
                  file=sys.stderr)  # fmt: skip
            lock.unlink(missing_ok=True)
        try:
            yield mine
        finally:
            if mine:
                lock.unlink(missing_ok=True)

    def _place_claim(self, lock: Path) -> bool:
        """Create `lock` holding `host pid time`, or False where it exists. Written to a temporary file and
        linked into place, so that a claim file is complete from the moment it exists (a full disk fails
        here, leaving none): an empty or unparsable one is never a live claim."""
        fd, tmp = tempfile.mkstemp(dir=self.records_dir, prefix=f"{lock.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}")
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)

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
        if not self.records_dir.is_dir():
            return []
        out = []
        try:
            paths = sorted(self.records_dir.glob("*.json"))
        except OSError as e:
            raise StoreError(f"{self.records_dir}: cannot be listed ({e.strerror})") from None
        for p in paths:
            try:
                out.append(load_record(p))
            except CorruptRecord as e:
                self.set_aside(p, str(e))
            except FileNotFoundError:  # set aside by another process meanwhile
                continue
        return out
