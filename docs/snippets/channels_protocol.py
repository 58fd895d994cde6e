"""docs/channels/protocol.rst: the frames a client exchanges with a Channels server."""

from __future__ import annotations

from peregrine_rt._channels import Channels, topic
from peregrine_rt.testing import open_client


class App(Channels):
    @topic("room:{name}")
    class Room:
        pass


async def test_wire() -> None:
    async with open_client(App) as client, client.websocket("/socket/websocket?vsn=2.0.0") as ws:
        # join
        await ws.send('["3","3","room:lobby","phx_join",{}]')
        assert (
            await ws.receive() == '["3","3","room:lobby","phx_reply",{"status":"ok","response":{}}]'
        )
        # heartbeat
        await ws.send('[null,"4","phoenix","heartbeat",{}]')
        assert (
            await ws.receive() == '[null,"4","phoenix","phx_reply",{"status":"ok","response":{}}]'
        )
        # an event on a topic not joined
        await ws.send('[null,"5","room:other","new_msg",{}]')
        assert await ws.receive() == (
            '[null,"5","room:other","phx_reply",'
            '{"status":"error","response":{"reason":"unmatched topic"}}]'
        )
        # leave
        await ws.send('["3","6","room:lobby","phx_leave",{}]')
        assert (
            await ws.receive() == '["3","6","room:lobby","phx_reply",{"status":"ok","response":{}}]'
        )
        assert await ws.receive() == '["3","3","room:lobby","phx_close",{}]'
        # not JSON: closed with 1007
        await ws.send("hello")
        assert (await ws.receive_close()).code == 1007
