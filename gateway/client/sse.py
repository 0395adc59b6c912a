"""Reading a ``text/event-stream`` body into events (the WHATWG server-sent events rules
that matter here: fields, comments, multi-line data, id-only frames)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class RawEvent:
    id: str | None
    event: str | None
    data: str | None  # None for a frame without data (it dispatches nothing but its id)


async def read_sse(content: aiohttp.StreamReader) -> AsyncIterator[RawEvent]:
    event_id: str | None = None
    event_type: str | None = None
    data: list[str] = []
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if event_id is not None or data:
                yield RawEvent(event_id, event_type, "\n".join(data) if data else None)
            event_id, event_type, data = None, None, []
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
