"""Checks the diagram of redis_diagram.txt (redis.rst) against RedisHub: names and wire format."""

from __future__ import annotations

from pathlib import Path

DIAGRAM = Path(__file__).with_name("redis_diagram.txt")


def test_redis_diagram_matches_the_hub() -> None:
    from peregrine_rt import _redis_hub  # noqa: PLC0415 - coredis only when this test runs

    text = DIAGRAM.read_text()
    prefix = _redis_hub.DEFAULT_PREFIX
    assert f'channel: "{prefix}room"' in text
    assert f"PSUBSCRIBE {prefix}*" in text
    assert f"node id ({_redis_hub.NODE_ID_SIZE} bytes)" in text
    assert f'b"{_redis_hub._TEXT.decode()}" (text)' in text
    assert f'b"{_redis_hub._BYTES.decode()}" (bytes)' in text
    for step in ("1. deliver to ws1,ws2", "2. PUBLISH", "3. not its own id", "4. own id: skip"):
        assert step in text
    assert max(len(line) for line in text.splitlines()) <= 100  # fits the page
