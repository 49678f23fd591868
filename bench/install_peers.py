"""Install the peers into ignored folders: LiteLLM (PyPI) and Portkey's gateway (npm).

Each installer is idempotent (a stamp file marks success) and returns None or the reason it
failed; the benchmark reports that reason and carries on without the peer.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "peers"
LITELLM_VERSION = "1.109.1"
PORTKEY_VERSION = "1.15.2"
# Portkey streams only with the hono versions of its own lockfile; newer ones answer every
# stream with a 500.
PORTKEY_OVERRIDES = {"hono": "4.9.7", "@hono/node-server": "1.13.5", "@hono/node-ws": "1.2.0"}

# Resolves LiteLLM's base + `proxy` requirements from its installed metadata, relaxing the
# certifi pin (1.109.1 asks for a certifi newer than the registry holds).
_REQS_SCRIPT = """
import sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement
out = []
for line in requires("litellm") or []:
    r = Requirement(line)
    if r.marker and not any(r.marker.evaluate({"extra": e}) for e in ("", "proxy")):
        continue
    if r.name == "certifi":
        out.append("certifi")
        continue
    r.marker = None
    out.append(str(r))
print("\\n".join(out))
"""


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-800:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {tail}")


def _install_relaxed(py: str, reqs: list[str], req_file: Path) -> None:
    """pip-install `reqs`; a pin the registry cannot satisfy is relaxed and retried (bounded)."""
    for _ in range(6):
        req_file.write_text("\n".join(reqs) + "\n")
        proc = subprocess.run(
            [py, "-m", "pip", "install", "-q", "-r", str(req_file)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode == 0:
            return
        missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", proc.stderr)
        if not missing:
            raise RuntimeError(f"pip install failed: {proc.stderr[-800:]}")
        name = missing.group(1).lower().replace("_", "-")
        relaxed = [r for r in reqs if _req_name(r) != name]
        if len(relaxed) == len(reqs):
            raise RuntimeError(f"pip install failed: {proc.stderr[-800:]}")
        reqs = [*relaxed, name]
    raise RuntimeError("pip install failed: too many unsatisfiable pins")


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def litellm_bin() -> Path:
    """The installed `litellm` console script."""
    return PEERS / "litellm-venv" / "bin" / "litellm"


def install_litellm() -> str | None:
    """Create bench/peers/litellm-venv with LiteLLM's proxy; None on success, else why not."""
    venv = PEERS / "litellm-venv"
    stamp = venv / ".installed"
    if stamp.exists():
        return None
    try:
        PEERS.mkdir(parents=True, exist_ok=True)
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)])
        py = str(venv / "bin" / "python")
        _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
        _run([py, "-m", "pip", "install", "-q", "--no-deps", f"litellm=={LITELLM_VERSION}"])
        reqs = subprocess.run(
            [py, "-c", _REQS_SCRIPT], capture_output=True, text=True, check=True
        ).stdout.split()
        _install_relaxed(py, reqs, venv / "requirements-relaxed.txt")
        stamp.write_text(LITELLM_VERSION)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        return f"LiteLLM install failed: {exc}"
    return None


def portkey_entry() -> Path:
    """Portkey's Node server script."""
    return (
        PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    )


def install_portkey() -> str | None:
    """npm-install @portkey-ai/gateway into bench/peers/portkey; None on success, else why not."""
    home = PEERS / "portkey"
    stamp = home / ".installed"
    if stamp.exists():
        return None
    if shutil.which("npm") is None:
        return "Portkey not installed: npm is missing"
    try:
        home.mkdir(parents=True, exist_ok=True)
        pkg = {
            "name": "sluice-bench-portkey",
            "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION, **PORTKEY_OVERRIDES},
            "overrides": PORTKEY_OVERRIDES,
        }
        (home / "package.json").write_text(json.dumps(pkg, indent=2))
        _run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=home)
        if not portkey_entry().exists():
            return f"Portkey installed but {portkey_entry()} is missing"
        stamp.write_text(PORTKEY_VERSION)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        return f"Portkey install failed: {exc}"
    return None


if __name__ == "__main__":
    print("litellm:", install_litellm() or "ok")
    print("portkey:", install_portkey() or "ok")
