"""Audit lines and redaction: scrubbing enforced at the logger for every code path, and
prompts kept out of logs and storage unless `logging.store_content` is on."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sluice import logsafe
from tests.conftest import Gateway, openai_config
from tests.fakes.openai_fake import FakeOpenAI
from tests.usage_helpers import read_rows, sqlite_bytes, wait_rows

SECRET = "canary-logsafe-5be1d07a"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything logged through a handler on the root logger, formatted with tracebacks."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def test_every_logger_is_scrubbed_at_the_record(captured: io.StringIO) -> None:
    logsafe.install([SECRET])
    logging.getLogger("sluice.anything").warning("configured key %s", SECRET)
    logging.getLogger("uvicorn.error").error("header Authorization: Bearer %s", "abcdefghijkl")
    logging.getLogger("some.library").warning("dict %r", {"api_key": "sk-live-0123456789abcdef"})
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logging.getLogger("sluice.x").exception("boom")
    text = captured.getvalue()
    assert SECRET not in text and "abcdefghijkl" not in text and "sk-live-0123" not in text
    assert text.count("[REDACTED]") >= 4
    assert "RuntimeError" in text and "configured key" in text  # the rest is kept


def test_secrets_of_collects_every_configured_secret() -> None:
    from sluice.config import from_mapping

    settings = from_mapping(
        {
            "providers": {"openai": {"kind": "openai", "api_key": "sk-prov-1234567890"}},
            "auth": {"tokens": ["static-token-1"], "admin_key": "admin-key-1"},
            "storage": {"url": "postgresql://u:db-password-9@127.0.0.1/x"},
            "registration_token": "reg-token-1",
        }
    )
    found = set(logsafe.secrets_of(settings))
    wanted = {"sk-prov-1234567890", "static-token-1", "admin-key-1", "db-password-9", "reg-token-1"}
    assert wanted <= found


PROMPT = "the-secret-prompt-text-4411"


def _ask(gw: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"Authorization": f"Bearer {SECRET}"}
    r = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200


def test_prompts_are_not_logged_or_stored_by_default(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/nocontent.db"
    gw = start_gateway(openai_config(fake_openai, storage={"url": url}, auth={"tokens": [SECRET]}))
    _ask(gw)
    rows = wait_rows(url, 1)
    (line,) = gw.wait_audit(1)
    assert "content" not in line
    assert line["request_id"] == rows[0]["request_id"]
    assert set(rows[0]) - {"id"} <= set(line)  # the audit line has every field of the record
    gw.stop()
    db_bytes = sqlite_bytes(url)
    assert PROMPT not in gw.stdout() and PROMPT.encode() not in db_bytes
    assert PROMPT not in gw.stderr()


def test_store_content_puts_the_scrubbed_request_in_the_audit_line(
    start_gateway: Callable[..., Gateway], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/content.db"
    config = openai_config(
        fake_openai,
        storage={"url": url},
        auth={"tokens": [SECRET]},
        logging={"store_content": True},
    )
    gw = start_gateway(config)
    _ask(gw)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"mine {SECRET}"}]}
    httpx.post(
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {SECRET}"},
        timeout=30,
    )
    lines = gw.wait_audit(2)
    assert PROMPT in lines[0]["content"]["request"]
    assert "mine [REDACTED]" in lines[1]["content"]["request"]  # secrets scrubbed from content
    assert SECRET not in gw.stdout()
    assert len(read_rows(url)) >= 1
    assert PROMPT.encode() not in sqlite_bytes(url)


@pytest.mark.parametrize(
    "sizes",
    [[10, 20, 30], [5000], [4095, 1, 4094, 2], [100] * 200, [0, 0, 9000, 3]],
    ids=["small", "one-long", "edges", "many", "mixed"],
)
def test_audit_chunks_are_whole_lines_within_pipe_buf(sizes: list[int]) -> None:
    from sluice.usage import _line_chunks

    data = b"".join(b"x" * n + b"\n" for n in sizes)
    chunks = _line_chunks(data, 4096)
    assert b"".join(chunks) == data
    for chunk in chunks:
        assert chunk.endswith(b"\n")
        assert len(chunk) <= 4096 or chunk.count(b"\n") == 1  # only a single long line exceeds
