"""Claude Code, the real CLI, against Sluice's /v1/messages with an OpenAI-routed model.

Claude Code (pinned in the Makefile, installed by `make claude-code` into the ignored
bench/peers/claude-code) runs in print mode with a temp HOME, pointed at the gateway with a
static token; `claude-*` routes to an `openai`-kind provider, the fake OpenAI upstream
(tests/fakes/openai_agent_fake.py), so every request is translated Messages → chat
completions and its stream back into Anthropic's events. `CLAUDE_CODE_BIN` overrides the
binary. Without Claude Code the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import IN_CI, ROOT, Gateway, launch_gateway
from tests.fakes.openai_agent_fake import FakeOpenAIAgent

TOKEN = "gw-token-claude-code"
UPSTREAM_KEY = "sk-test-upstream-key-0001"
MODEL = "claude-sonnet-4-5"
FAST_MODEL = "claude-haiku-4-5"
BIN = Path(
    os.environ.get("CLAUDE_CODE_BIN") or ROOT / "bench/peers/claude-code/node_modules/.bin/claude"
)
# a 1×1 PNG, for Claude Code's Read tool answering with an image block
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _version() -> str | None:
    """Claude Code's version line, or None when it is absent or does not run."""
    try:
        p = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 and "Claude Code" in p.stdout else None


@pytest.fixture(scope="module")
def claude_code() -> str:
    version = _version()
    if version is None:
        reason = f"Claude Code is not installed at {BIN} (`make claude-code`, needs npm)"
        if IN_CI:
            pytest.fail(f"{reason} (required under CI=true)")
        pytest.skip(reason)
    return version


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIAgent]:
    f = FakeOpenAIAgent().start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAIAgent) -> Iterator[Gateway]:
    config = {
        "providers": {"openai": {"kind": "openai", "api_key": UPSTREAM_KEY, "base_url": fake.url}},
        "models": [{"match": "claude-*", "provider": "openai"}],
        "auth": {"tokens": [TOKEN]},
    }
    g = launch_gateway(tmp_path_factory.mktemp("gw"), config)
    yield g
    g.stop()


def run_claude(gw: Gateway, cwd: Path, prompt: str, *args: str) -> dict[str, Any]:
    """`claude -p PROMPT --output-format json` against the gateway; its result object."""
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    env = {  # nothing inherited but PATH: no developer ANTHROPIC_* or CLAUDE_* settings
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gw.url,
        "ANTHROPIC_API_KEY": TOKEN,
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_SMALL_FAST_MODEL": FAST_MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": FAST_MODEL,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    cmd = [str(BIN), "-p", prompt, "--output-format", "json", "--no-session-persistence", *args]
    p = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert p.stdout.strip(), f"no output (exit {p.returncode}): {p.stderr[-2000:]}"
    result: dict[str, Any] = orjson.loads(p.stdout.strip().splitlines()[-1])
    assert result["type"] == "result", result
    assert not result["is_error"], (result, p.stderr[-2000:])
    assert p.returncode == 0, p.stderr[-2000:]
    return result


def _messages_audit(gw: Gateway, n: int) -> list[dict[str, Any]]:
    lines = [a for a in gw.wait_audit(n) if a["path"] == "/v1/messages"]
    assert len(lines) >= n, lines
    return lines


def test_prompt_answer_reaches_claude_code(
    claude_code: str, gw: Gateway, fake: FakeOpenAIAgent, tmp_path: Path
) -> None:
    fake.tool_name = "none-offered"  # the plain fake's text answer
    before, audits = len(fake.requests), len(gw.audit())
    result = run_claude(gw, tmp_path, "Say hello")
    assert result["result"] == "Hello from the fake upstream."
    assert result["num_turns"] == 1
    assert result["usage"]["output_tokens"] == 6  # message_delta's usage, from the upstream's

    [up] = fake.requests[before:]
    assert up["path"] == "/v1/chat/completions"  # OpenAI's format upstream
    assert up["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"  # not the gateway token
    body = up["body"]
    assert body["model"] == MODEL and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    # Claude Code's system blocks (with cache_control) became one system message
    assert body["messages"][0]["role"] == "system"
    assert "Claude" in body["messages"][0]["content"]
    assert body["messages"][-1]["role"] == "user"
    # its tool definitions (input_schema) became OpenAI functions
    names = {t["function"]["name"] for t in body["tools"]}
    assert {"Read", "Bash", "Edit"} <= names
    assert all(t["function"]["parameters"].get("type") == "object" for t in body["tools"])
    # `thinking` and `context_management` are dropped; metadata.user_id (a ~150-character
    # JSON object) goes as a 64-character digest that OpenAI-compatible upstreams accept
    assert "thinking" not in body and "context_management" not in body
    assert len(body["user"]) == 64

    [audit] = _messages_audit(gw, audits + 1)[-1:]
    assert audit["status"] == 200 and audit["provider"] == "openai"
    assert audit["model"] == MODEL and audit["key_id"].startswith("static_")


def test_tool_loop_through_the_gateway(
    claude_code: str, gw: Gateway, fake: FakeOpenAIAgent, tmp_path: Path
) -> None:
    """The model calls Read; Claude Code runs it and sends the file back as a tool_result."""
    note = tmp_path / "note.txt"
    note.write_text("the secret word is pineapple\n")
    fake.tool_name, fake.arguments = "Read", {"file_path": str(note)}
    before = len(fake.requests)
    result = run_claude(gw, tmp_path, "What does note.txt say?", "--tools", "Read")
    assert result["num_turns"] == 2
    assert result["result"].startswith("Tool said: ")
    assert "the secret word is pineapple" in result["result"]

    first, second = fake.requests[before:]
    assert [t["function"]["name"] for t in first["body"]["tools"]] == ["Read"]
    call, answer = second["body"]["messages"][-2:]
    assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "Read"
    assert answer["role"] == "tool" and answer["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "pineapple" in answer["content"]


def test_read_an_image(
    claude_code: str, gw: Gateway, fake: FakeOpenAIAgent, tmp_path: Path
) -> None:
    """Read on a picture answers with an image block inside the tool_result: it reaches the
    OpenAI upstream as an image part of the following user message."""
    dot = tmp_path / "dot.png"
    dot.write_bytes(PNG)
    fake.tool_name, fake.arguments = "Read", {"file_path": str(dot)}
    before = len(fake.requests)
    result = run_claude(gw, tmp_path, "Look at dot.png", "--tools", "Read")
    assert result["num_turns"] == 2 and result["result"].startswith("Tool said: ")

    msgs = fake.requests[before:][-1]["body"]["messages"]
    tool = next(m for m in msgs if m["role"] == "tool")
    after = msgs[msgs.index(tool) + 1 :]
    urls = [
        p["image_url"]["url"]
        for m in after
        if m["role"] == "user" and isinstance(m["content"], list)
        for p in m["content"]
        if p["type"] == "image_url"
    ]
    assert urls == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
