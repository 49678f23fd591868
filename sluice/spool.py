"""The local spool: usage rows that storage could not take yet, as fsync'd JSON lines.

Each process appends to its own `usage-<pid>.jsonl`, so workers never interleave writes.
To drain, a process *claims* a file by renaming it (atomic on one filesystem): its own live
file, and the files of processes that are gone (a crash or a restart leaves them behind).
Appends after a claim go to a fresh file, so a claimed file is never written again.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("sluice.usage")

_NAME = re.compile(r"^usage-(\d+)(?:-\d+)?\.(jsonl|claimed)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class Spool:
    """Append-only JSON-lines files under `directory`, one live file per process."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.pid = os.getpid()
        self._lock = threading.Lock()  # appends (writer thread, overflow) vs. claims
        self._seq = itertools.count(1)
        self.unreadable = 0  # lines that could not be parsed (a torn last line after a crash)

    @property
    def live(self) -> Path:
        """This process's append file."""
        return self.dir / f"usage-{self.pid}.jsonl"

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append rows and fsync once; returns how many were written. Raises OSError."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if not data:
            return 0
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return data.count(b"\n")

    def pending(self) -> bool:
        """Whether any spool file (ours or an orphan's) waits to be drained."""
        return any(True for _ in self._drainable())

    def _drainable(self) -> Iterator[Path]:
        if not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m is None:
                continue
            pid = int(m.group(1))
            if pid == self.pid or not _alive(pid):
                yield p

    def claim(self) -> list[Path]:
        """Take every drainable file for this process (renamed, so nobody appends to it)."""
        claimed: list[Path] = []
        with self._lock:
            for p in sorted(self._drainable()):
                if p.suffix == ".claimed" and p.name.startswith(f"usage-{self.pid}-"):
                    claimed.append(p)  # ours from an earlier failed drain
                    continue
                target = self.dir / f"usage-{self.pid}-{next(self._seq)}.claimed"
                while target.exists():
                    target = self.dir / f"usage-{self.pid}-{next(self._seq)}.claimed"
                try:
                    os.rename(p, target)
                except FileNotFoundError:
                    continue  # another worker claimed it first
                claimed.append(target)
        return claimed

    def read(self, path: Path) -> list[dict[str, Any]]:
        """The rows of one claimed file; a torn line is counted and skipped."""
        rows: list[dict[str, Any]] = []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.unreadable += 1
                log.warning("usage spool %s: skipped an unreadable line", path.name)
        return rows

    @staticmethod
    def done(path: Path) -> None:
        """Remove a claimed file whose rows are now in storage."""
        path.unlink(missing_ok=True)
