"""A recording ``PhoneNetwork`` for tests: every send recorded, outcomes scripted. It
remembers; it does not pretend to be Twilio (no status callbacks, no pacing of its own),
so tests assert on what the gateway asked of it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.clock import Clock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel
from gateway.domain.ports import OutboundText, SentText


@dataclass(frozen=True, slots=True)
class Accepted:
    sid: str
    text: OutboundText
    created_at: datetime
    at: float  # loop time


class RecordingPhoneNetwork:
    """``script`` holds what the next sends raise (None: accept); accepted texts are what
    ``find_sent`` searches, as the provider's list would. ``hold``, when set, is awaited
    inside each send after the provider took it and before the sender hears back (a test
    stops a process there)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.script: list[BaseException | None] = []
        self.attempts: list[OutboundText] = []
        self.accepted: list[Accepted] = []
        self.lookups: list[dict[str, object]] = []
        self.delay = 0.0
        self.hold: asyncio.Event | None = None
        self.got_one = asyncio.Event()  # set at each accepted text
        self._sids = itertools.count(1)

    def accept_silently(self, text: OutboundText) -> str:
        """A message that reached the provider without the sender hearing back."""
        sid = f"SM{next(self._sids):032d}"
        loop = asyncio.get_running_loop()
        self.accepted.append(Accepted(sid, text, self.clock.now(), loop.time()))
        self.got_one.set()
        return sid

    async def send(self, text: OutboundText) -> SentText:
        self.attempts.append(text)
        if self.delay:
            await asyncio.sleep(self.delay)
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        sid = self.accept_silently(text)
        if self.hold is not None:
            await self.hold.wait()
        return SentText(provider_id=sid, status="queued")

    async def find_sent(self, *, to: PhoneNumber, from_: PhoneNumber, channel: Channel,
                        sent_after: datetime, body: str | None,
                        skip: Collection[str] = frozenset()) -> SentText | None:
        self.lookups.append({"to": to, "from_": from_, "channel": channel,
                             "sent_after": sent_after, "body": body, "skip": set(skip)})
        for accepted in self.accepted:
            t = accepted.text
            if (t.to, t.from_, t.channel) == (to, from_, channel) \
                    and accepted.sid not in skip \
                    and accepted.created_at >= sent_after \
                    and (body is None or t.body == body):
                return SentText(provider_id=accepted.sid, status="sent")
        return None

    @property
    def bodies(self) -> list[str | None]:
        return [a.text.body for a in self.accepted]
