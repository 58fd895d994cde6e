"""The Channels limits come from the server's Config unless the app sets its own."""

from __future__ import annotations

from typing import Any

import pytest

from peregrine_rt import Config
from peregrine_rt._channels import Channels, topic
from peregrine_rt._channels._limits import Limits
from peregrine_rt.testing import open_client

from .conftest import Phx


class Rooms(Channels):
    @topic("room:{name}", history=False)
    class Room:
        async def join(self, socket: Any, params: Any) -> None:
            return None


class Strict(Rooms):
    limits = Limits(max_joins=1)


async def _joins(app: type[Channels], **config: Any) -> list[str]:
    async with open_client(app, **config) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        statuses = []
        for name in ("a", "b", "c"):
            _, reply = await phx.join(f"room:{name}")
            statuses.append(reply[4]["status"] + ":" + str(reply[4]["response"].get("reason")))
        return statuses


async def test_config_sets_the_limits() -> None:
    assert await _joins(Rooms, channels_max_joins=2) == [
        "ok:None",
        "ok:None",
        "error:too_many_joins",
    ]
    assert await _joins(Rooms) == ["ok:None"] * 3  # the default: 100


async def test_a_class_limits_override_the_config() -> None:
    assert await _joins(Strict, channels_max_joins=50) == ["ok:None"] + ["error:too_many_joins"] * 2


def test_the_config_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="channels_max_joins"):
        Config(channels_max_joins=0)
    with pytest.raises(ValueError, match="channels_publish_rate"):
        Config(channels_publish_rate=0)
    limits = Limits.from_config(Config(channels_publish_rate=7.5, json_max_depth=9))
    assert (limits.publish_rate, limits.max_depth) == (7.5, 9)
