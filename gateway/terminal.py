"""Reading a terminal (or a pipe) from asyncio, for the interactive development commands
(``gateway demo``, ``gateway wallet``)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading


def stdin_lines(name: str) -> asyncio.Queue[str | None]:
    """Lines typed on stdin, read on a daemon thread named ``name`` (a blocked read never
    holds up the exit); None at end of input."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name=name, daemon=True).start()
    return queue
