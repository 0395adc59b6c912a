"""Faults the simulator can inject into its Messages create endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.testing.twilio_sim.wire import ERROR_MESSAGES, strip_channel


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault for the next ``times`` create requests (every one when ``times`` is None),
    optionally only for sends to phone ``to``. Build with the class methods."""

    kind: str
    to: str | None = None
    times: int | None = 1
    status: int | None = None
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0
    create: bool = False  # whether the message still gets created (dropped/slow/garbled)
    early: bool = False  # undelivered: its callbacks come before the create's own answer

    KINDS = ("rate_limited", "server_error", "slow", "drop", "garbled", "reject",
             "undelivered", "early_callbacks", "reordered_callbacks")

    @classmethod
    def rate_limited(cls, *, retry_after: float | None = 1.0, times: int | None = 1,
                     to: str | None = None) -> Fault:
        return cls("rate_limited", to=to, times=times, status=429, code=20429,
                   retry_after=retry_after)

    @classmethod
    def server_error(cls, *, status: int = 500, times: int | None = 1,
                     to: str | None = None) -> Fault:
        return cls("server_error", to=to, times=times, status=status, code=20500)

    @classmethod
    def slow(cls, delay: float, *, times: int | None = 1, to: str | None = None) -> Fault:
        """Answers after ``delay`` seconds; the message is created then, even when the
        client gave up waiting (as Twilio would)."""
        return cls("slow", to=to, times=times, delay=delay, create=True)

    @classmethod
    def drop(cls, *, create: bool = True, times: int | None = 1,
             to: str | None = None) -> Fault:
        """Closes the connection after the request arrived, without an answer."""
        return cls("drop", to=to, times=times, create=create)

    @classmethod
    def garbled(cls, *, create: bool = True, times: int | None = 1,
                to: str | None = None) -> Fault:
        """Answers 201 with a body that is not JSON."""
        return cls("garbled", to=to, times=times, create=create)

    @classmethod
    def reject(cls, code: int, *, to: str | None = None, times: int | None = None,
               status: int = 400, message: str | None = None) -> Fault:
        """A permanent error such as 21610 (unsubscribed), 21211 (invalid number) or
        63016 (outside the WhatsApp window)."""
        return cls("reject", to=to, times=times, status=status, code=code,
                   message=message or ERROR_MESSAGES.get(code, "Message refused"))

    @classmethod
    def undelivered(cls, code: int = 30003, *, final: str = "undelivered",
                    to: str | None = None, times: int | None = 1,
                    early: bool = False) -> Fault:
        """Accepted, then a status callback with ``final`` (undelivered/failed) and
        ``code``; the phone receives nothing. ``early``: the callbacks are sent (and
        answered) before the create's own answer."""
        return cls("undelivered", to=to, times=times, code=code, message=final, early=early)

    @classmethod
    def early_callbacks(cls, *, to: str | None = None, times: int | None = 1) -> Fault:
        """Every status callback is sent (and answered) before the create's own answer."""
        return cls("early_callbacks", to=to, times=times)

    @classmethod
    def reordered_callbacks(cls, *, to: str | None = None, times: int | None = 1) -> Fault:
        """The status callbacks arrive last first (delivered before sent before queued),
        as they may when Twilio's requests overtake each other."""
        return cls("reordered_callbacks", to=to, times=times)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        kind = data.get("kind")
        if kind not in cls.KINDS:
            raise ValueError(f"kind must be one of {', '.join(cls.KINDS)}")
        allowed = {"to", "times", "status", "code", "message", "retry_after", "delay", "create",
                   "early"}
        unknown = set(data) - allowed - {"kind"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        base = {
            "rate_limited": cls.rate_limited(), "server_error": cls.server_error(),
            "slow": cls.slow(1.0), "drop": cls.drop(), "garbled": cls.garbled(),
            "reject": cls.reject(int(data.get("code") or 21211)),
            "undelivered": cls.undelivered(), "early_callbacks": cls.early_callbacks(),
            "reordered_callbacks": cls.reordered_callbacks(),
        }[kind]
        return replace(base, **{k: v for k, v in data.items() if k in allowed})

    def matches(self, to: str) -> bool:
        return self.to is None or self.to == strip_channel(to)
