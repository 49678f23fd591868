"""Key events survive a Redis restart: the first PUBLISH on the dead pooled connection fails,
and the event is sent again rather than lost (found by `make soak`)."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from sluice.auth.keys import KeyEvents
from sluice.store import KeyRecord


class _Client:
    """A redis client whose first publish fails as after a Redis restart."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str]] = []

    async def publish(self, channel: str, msg: str) -> int:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection closed by server.")
        self.sent.append((channel, msg))
        return 1


def _record() -> KeyRecord:
    return KeyRecord("key_1", "team", "k", "sk_1234567", "ab" * 32, 0.0, 1.0, None, None, {}, {})


async def test_publish_retries_once_after_a_dead_connection() -> None:
    events = KeyEvents(None, "chan")
    client = _Client(failures=1)
    events.client = client
    await events.publish("revoke", _record())
    assert len(client.sent) == 1 and '"revoke"' in client.sent[0][1]


async def test_publish_gives_up_quietly_when_redis_stays_down(caplog: Any) -> None:
    events = KeyEvents(None, "chan")
    client = _Client(failures=5)
    events.client = client
    await events.publish("revoke", _record())  # never raises: an admin action must not fail
    assert client.sent == [] and "could not publish key revoke" in caplog.text
