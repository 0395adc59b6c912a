"""PostgreSQL LISTEN/NOTIFY between gateway processes: a wake-up, never the work itself.

What one process leaves for another (XMTP deliveries for the process that does the XMTP
work, a chat request, its answer) is in the database already; a notification only says
"look now" instead of at the next poll. So a notification lost (the listening connection
dropped, the server restarted) costs a poll interval, never a message: after each
reconnect every callback is called once, as if notified, for what it may have missed.

One dedicated connection (asyncpg, outside SQLAlchemy's pool: a listening connection is
never returned to a pool) listens, and sends this process's notifications too. SQLite has
no such thing, and one process: there is nothing to notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

# The channels, one per kind of work another process may be waiting for.
CHAT_WORK = "gateway_chat_work"  # XMTP deliveries are pending (for the XMTP process)
CHAT_REQUESTS = "gateway_chat_requests"  # a chat request was written (for the XMTP process)
CHAT_ANSWERS = "gateway_chat_answers"  # a chat request was answered (payload: its id)

Callback = Callable[[str], None]  # called with the payload, on the loop


def asyncpg_dsn(url: URL) -> str:
    """SQLAlchemy's ``postgresql+asyncpg://…`` as the DSN asyncpg itself takes."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Notifications:
    """Listens on the channels callbacks were registered for (``on``, before ``run``) and
    sends ``notify``. ``run`` keeps the connection up until cancelled."""

    def __init__(self, dsn: str, *, application_name: str = "gateway") -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._callbacks: dict[str, list[Callback]] = {}
        self._connection: Any = None  # asyncpg.Connection while connected
        self._lost = asyncio.Event()
        self._sending = asyncio.Lock()  # one statement at a time on a connection
        self.connected = asyncio.Event()

    def on(self, channel: str, callback: Callback) -> None:
        self._callbacks.setdefault(channel, []).append(callback)

    async def notify(self, channel: str, payload: str = "") -> None:
        """Sends a notification now; when not connected it is dropped (logged at DEBUG):
        the poll of whoever waits for it is the fallback."""
        connection = self._connection
        if connection is None:
            log.debug("not connected: notification %s dropped", channel)
            return
        try:
            async with self._sending:
                await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("notification %s dropped: %s", channel, exc)

    def notify_soon(self, channel: str, payload: str = "") -> None:
        """``notify`` from code that cannot wait (after a commit): sent by a task."""
        task = asyncio.get_running_loop().create_task(self.notify(channel, payload))
        task.add_done_callback(_retrieve)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                failures += 1
                delay = min(0.2 * 2 ** failures, 10.0)
                log.warning("database notifications: %s; listening again in %.1fs (polls "
                            "stand in meanwhile)", exc, delay)
                await asyncio.sleep(delay)

    async def _listen(self) -> None:
        connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": self._application_name})
        self._lost.clear()
        connection.add_termination_listener(lambda _c: self._lost.set())
        try:
            for channel in self._callbacks:
                await connection.add_listener(channel, self._received)
            self._connection = connection
            self.connected.set()
            self._call_all()  # what was notified while nobody listened
            while not self._lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(15):
                        await self._lost.wait()
                if not self._lost.is_set():  # a quiet connection may be dead: ask it
                    async with self._sending, asyncio.timeout(10):
                        await connection.execute("SELECT 1")
            raise OSError("the listening connection closed")
        finally:
            self._connection = None
            self.connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)

    def _received(self, _connection: object, _pid: int, channel: str, payload: str) -> None:
        for callback in self._callbacks.get(channel, ()):
            callback(payload)

    def _call_all(self) -> None:
        for callbacks in self._callbacks.values():
            for callback in callbacks:
                callback("")


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # notify logs its own failures; nothing else can be raised
