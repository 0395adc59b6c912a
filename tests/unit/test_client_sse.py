"""The client's server-sent events reader."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.base_protocol import BaseProtocol

from gateway.client.sse import RawEvent, read_sse


async def parse(text: str) -> list[RawEvent]:
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    reader.feed_data(text.encode())
    reader.feed_eof()
    return [event async for event in read_sse(reader)]


class TestReadingServerSentEvents:
    async def test_fields_of_one_event(self):
        assert await parse("id: 7\nevent: message.added\ndata: {\"a\":1}\n\n") == [
            RawEvent("7", "message.added", '{"a":1}')]

    async def test_comments_and_retry_lines_dispatch_nothing(self):
        assert await parse(": keep-alive\n\nretry: 2000\n\n") == []

    async def test_an_id_only_frame_reports_the_position_without_data(self):
        assert await parse("retry: 2000\nid: 41\n\n") == [RawEvent("41", None, None)]

    async def test_multi_line_data_and_crlf_line_ends(self):
        assert await parse("id: 1\r\ndata: a\r\ndata: b\r\n\r\n") == [
            RawEvent("1", None, "a\nb")]

    async def test_an_unterminated_last_event_is_dropped(self):
        assert await parse("id: 1\ndata: x\n\nid: 2\ndata: half") == [RawEvent("1", None, "x")]
