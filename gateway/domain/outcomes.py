"""What became of one attempt at a delivery: a channel reports it to the outbox engine,
which settles it through the relay (the one writer of delivery states)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Sent:
    """The provider took it; ``provider_id`` is its id there (a Twilio sid, an XMTP
    message id). ``note``: one line for the author's side about how it went, when that
    is worth saying (a file that could not go with it; a picture sent as a link)."""

    provider_id: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Not sent, worth trying again after the backoff (never sooner than ``retry_after``).
    ``at_once``: due again now, the backoff already served (a lookup found nothing sent).
    ``forever``: never given up on for this (the message may still arrive: an XMTP node
    that did not answer), only reported loudly now and then."""

    reason: str
    code: int | None = None
    retry_after: float | None = None
    at_once: bool = False
    forever: bool = False
    due: datetime | None = None  # set by the engine from its backoff before it settles


@dataclass(frozen=True, slots=True)
class Failed:
    """Not sent, for good. ``refused``: our own policy said no (a metrics label).
    ``whole_lane``: every delivery waiting in the same lane fails the same way (a group
    that cannot be made). ``unreachable``: the wallet that is not on XMTP (the phone is
    told)."""

    reason: str
    code: int | None = None
    refused: bool = False
    whole_lane: bool = False
    unreachable: str | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    """The request may have left: never sent again blindly, reconciled instead."""

    reason: str


@dataclass(frozen=True, slots=True)
class HandBack:
    """Not tried (the sender has no room within the lease, the engine stops): pending
    again, due at ``due``, without using up an attempt."""

    due: datetime


Outcome = Sent | Retry | Failed | Unknown | HandBack
