"""An asyncio event loop on its own thread, for work that must not share the caller's loop.

libxmtp's bindings run their native work on the thread of the loop that awaits them
(2-3 ms per send, single blocks up to 6 ms). The gateway's loop answers webhooks, so
every libxmtp call runs here instead: ``await thread.run(coro)`` hands a coroutine to
this loop and waits for its result without blocking the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
SETTLE_SECONDS = 10.0


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Starts ``coro`` on this thread's loop; cancelling the future cancels it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on this thread's loop and awaits it from the caller's loop
        (cancelling the caller cancels the work)."""
        return await asyncio.wrap_future(self.submit(coro))

    async def settle(self) -> None:
        """Cancels the other work on this thread's loop and waits (SETTLE_SECONDS at
        most) until it has ended, its clean-up included (a message stream's close, say).
        Run it on this loop."""
        here = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not here]
        for task in others:
            if not task.cancelling():  # cancelling again would cut its clean-up short
                task.cancel()
        if others:  # their outcomes go to their callers' futures (submit)
            await asyncio.wait(others, timeout=SETTLE_SECONDS)

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the loop (cancelling what still runs on it) and joins the thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


async def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Runs ``coro`` on another thread's ``loop`` and awaits its result from this one."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
