"""Processes the benchmark starts: pinned with taskset, awaited on a port, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

GATEWAY_CORE = "0"  # the system under test
LOAD_CORE = "1"  # load generator, upstream and this harness


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin_self() -> None:
    """Move this harness (and the children that are not re-pinned) to the load core."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {int(LOAD_CORE)})


@dataclass
class Proc:
    """A started server process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        """The server's PID (taskset execs, so it is the server's own)."""
        return self.proc.pid

    def tail(self, n: int = 1500) -> str:
        """The end of its log, for error messages."""
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def peak_rss_mb(self) -> float | None:
        """VmHWM of the process and its descendants, in MB (None once it has exited)."""
        total = 0
        for pid in [self.pid, *_descendants(self.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024 if total else None

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the process and its descendants."""
        ticks = 0
        for pid in [self.pid, *_descendants(self.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL) this process and the descendants it left, by PID."""
        children = _descendants(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, from /proc's parent links."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def start(
    name: str,
    cmd: list[str],
    port: int,
    workdir: Path,
    core: str | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_timeout: float = 60.0,
) -> Proc:
    """Start `cmd` (pinned to `core` when given) and wait until `port` accepts connections."""
    if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", core, *cmd]
    log = workdir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        popen = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd or workdir
        )
    p = Proc(name, popen, port, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {popen.returncode}: {p.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return p
        except OSError:
            time.sleep(0.1)
    p.stop()
    raise RuntimeError(f"{name} did not listen on {port} within {ready_timeout:.0f}s: {p.tail()}")
