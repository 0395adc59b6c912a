"""A quiet libxmtp stream through the devnode outlives libxmtp's keepalive pings.

libxmtp 1.10 pings every 16 s (fixed in its gRPC client, not configurable), so the test
has to wait: grpc's default server policy struck the 2nd, 3rd and 4th ping and closed
the connection ("Too many pings") about 65 s in. 75 s of silence covers that with a
margin; nothing else runs in between, so the wait is the thing being tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.xmtp.client import XmtpClient, XmtpMessage
from gateway.xmtp.devnode.server import KEEPALIVE_OPTIONS, MIN_CLIENT_PING_INTERVAL_MS

pytestmark = pytest.mark.e2e

MakeClient = Callable[..., Awaitable[XmtpClient]]  # the make_client fixture

LIBXMTP_PING_INTERVAL_S = 16
IDLE_S = 75.0  # past the 4th ping, where the default policy hung up


class TestKeepalivePolicy:
    def test_the_devnode_allows_what_the_xmtp_node_allows(self) -> None:
        options = dict(KEEPALIVE_OPTIONS)
        assert options["grpc.keepalive_permit_without_calls"] == 1
        # libxmtp's pings must never count as abuse
        assert MIN_CLIENT_PING_INTERVAL_MS < LIBXMTP_PING_INTERVAL_S * 1000


class TestIdleStream:
    @pytest.mark.timeout(150)
    async def test_a_stream_quiet_past_the_keepalive_interval_stays_open_and_delivers(
            self, make_client: MakeClient) -> None:
        alice = await make_client()
        bob = await make_client()
        group = await bob.new_group([alice.address])
        received: asyncio.Queue[XmtpMessage] = asyncio.Queue()

        async with await alice.stream_all_messages() as stream:
            async def consume() -> None:
                async for message in stream:
                    if message.text is not None:
                        received.put_nowait(message)

            consumer = asyncio.create_task(consume())
            try:
                await group.send_text("before the silence")
                assert (await asyncio.wait_for(received.get(), 10)).text == "before the silence"

                # The consumer ends only if the stream fails or closes: it must do neither.
                done, _ = await asyncio.wait({consumer}, timeout=IDLE_S)
                assert not done, f"the stream ended while idle: {consumer.exception()!r}"

                await group.send_text("after the silence")
                assert (await asyncio.wait_for(received.get(), 10)).text == "after the silence"
            finally:
                consumer.cancel()
