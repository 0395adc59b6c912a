"""This process as the holder of outbox leases: an id, and a heartbeat that says it lives.

Leases are tied to a live process. Each process beats (``outbox_holders.alive_until``)
every few seconds; a delivery held by a process that stopped beating is taken back by the
others' reconcilers at once, without waiting out its lease. A process that starts again
with the same data directory reuses its holder id (kept in the directory, whose lock
proves the previous life is over) and takes back what that life held immediately.

Fencing from the holder's side: it sends only while its own heartbeat is known to be
current. A process that could not beat (its database away) stops sending before the
others may take its deliveries: a send that would end after the last ``alive_until`` it
wrote (``lapsed``) waits for a fresh beat and a renewed lease. The heartbeat is sized
past the longest send (``gateway.app.holder_alive_seconds``), so a healthy process
never beats on a send's account.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta
from pathlib import Path

from gateway.domain.clock import Clock
from gateway.domain.ports import Store

log = logging.getLogger(__name__)

HOLDER_FILE = "outbox-holder"
HEARTBEAT_SECONDS = 10.0  # how often a holder beats


def holder_id_for(data_dir: Path | None) -> str:
    """The holder id kept in ``data_dir`` (made on first use); a fresh one without."""
    if data_dir is None:
        return new_holder_id()
    path = data_dir / HOLDER_FILE
    try:
        found = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        found = ""
    if found:
        return found
    made = new_holder_id()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(made + "\n", encoding="ascii")
    return made


def new_holder_id() -> str:
    return "HO" + secrets.token_hex(16)


class Holder:
    def __init__(self, store: Store, clock: Clock, *, holder_id: str,
                 alive_seconds: float = 30.0, beat_seconds: float = HEARTBEAT_SECONDS) -> None:
        if beat_seconds >= alive_seconds:
            raise ValueError("a holder must beat more often than its heartbeat lasts")
        self.id = holder_id
        self._store = store
        self._clock = clock
        self._alive = timedelta(seconds=alive_seconds)
        self._beat = beat_seconds
        self.alive_until: datetime | None = None
        self.description = f"{socket.gethostname()} pid {os.getpid()}"

    async def beat(self) -> None:
        now = self._clock.now()
        until = now + self._alive
        async with self._store.transaction() as tx:
            await tx.beat(self.id, description=self.description, now=now, alive_until=until)
        self.alive_until = until

    async def run(self) -> None:
        """Beats until cancelled; a beat that fails is logged and tried at the next."""
        while True:
            await asyncio.sleep(self._beat)
            try:
                await self.beat()
            except Exception:  # the database is away: sends stop once the heartbeat ends
                log.warning("outbox heartbeat failed; sends stop at %s unless it recovers",
                            self.alive_until, exc_info=True)

    def lapsed(self, seconds: float) -> bool:
        """Whether work of ``seconds`` starting now would end after this process's known
        heartbeat: others may take (or have taken) what it holds."""
        if self.alive_until is None:
            return True
        return self._clock.now() + timedelta(seconds=seconds) >= self.alive_until
