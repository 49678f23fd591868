"""`sluice serve` as operators run it: cold start, --workers, SIGTERM with workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ROOT, free_port, launch_gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.test_drain import Call


def _workers(pid: int) -> set[int]:
    """uvicorn's worker processes under `pid`: direct children started by multiprocessing's
    spawn (not its resource tracker), from Linux /proc."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                out.add(int(entry.name))
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cold_start_answers_health_quickly(tmp_path: Path) -> None:
    """First /health after exec: ≈0.6 s of CPU (docs/deploy.md). The CPU bound is the gate,
    since wall time on a shared machine mostly measures the neighbours."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SLUICE_CONFIG", None)
    env["SLUICE_DATABASE_URL"] = f"sqlite:///{tmp_path}/sluice.db"
    subprocess.run([sys.executable, "-m", "sluice", "db", "upgrade"], env=env, check=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - started < 20:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.01)
        took, cpu = time.monotonic() - started, _cpu_s(proc.pid)
        assert cpu < 1.2, f"start-up used {cpu:.2f} s of CPU"
        assert took < 5.0, f"first /health took {took:.2f} s"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_importing_the_app_leaves_heavy_modules_for_later() -> None:
    code = (
        "import sys, sluice.app, sluice.cli; "
        "print([m for m in ('alembic', 'tiktoken', 'redis') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.timeout(90)
def test_two_workers_both_serve_and_both_drain(tmp_path: Path) -> None:
    fake = FakeOpenAI().start()
    fake.chunks, fake.stream_interval = 25, 0.1
    cfg = openai_config(fake, server={"drain_timeout_s": 10})
    gw = launch_gateway(tmp_path, cfg, args=["--workers", "2"])
    try:
        deadline = time.monotonic() + 30
        while len(_workers(gw.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _workers(gw.proc.pid)
        assert len(workers) == 2
        seen: set[int] = set()
        while seen != workers and time.monotonic() < deadline:
            # A new connection each time, so the kernel can hand it to either worker.
            r = httpx.get(gw.url + "/health/live", timeout=5, headers={"connection": "close"})
            seen.add(r.json()["pid"])
        assert seen == workers
        streams = [Call(gw.url, "gpt-4o-slowstream") for _ in range(4)]
        for s in streams:
            s.start()
        for s in streams:
            assert s.first.wait(10)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the supervisor looks at its signals every 0.5 s
        # New connections are refused, not queued unanswered behind a draining worker.
        with pytest.raises(httpx.ConnectError):
            httpx.get(gw.url + "/health/live", timeout=3)
        for s in streams:
            s.join(20)
            assert s.error is None and s.status == 200
            assert s.data[-1] == "[DONE]"
            assert not any("error" in orjson.loads(d) for d in s.data[:-1])
        gw.proc.wait(20)
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        gw.stop()
        fake.stop()


def test_db_head_is_alembics_head(tmp_path: Path) -> None:
    """`sluice serve` skips Alembic on SQLite when the file is at db.HEAD: HEAD must be the
    newest migration, or a new one would never be applied."""
    from alembic.script import ScriptDirectory

    from sluice import db

    url = f"sqlite:///{tmp_path}/sluice.db"
    assert ScriptDirectory.from_config(db.alembic_config(url)).get_current_head() == db.HEAD
    assert not db.is_current(url)  # no file yet
    db.upgrade(url)
    assert db.is_current(url)
    assert not db.is_current(f"sqlite:///{tmp_path}/other.db")
