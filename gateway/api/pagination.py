"""Cursor (keyset) pagination: a page is "the rows beyond this key, in this direction".

A page token is an opaque, URL-safe string carrying the key to start after, the direction
of travel and the listing's filters, so ``next_page_token`` alone fetches the next page
and rows inserted meanwhile never shift a page (no offsets). Keys are index-backed in the
store, so a page costs the same on page 1 and on page 10,000.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from gateway.api.errors import InvalidPageToken, InvalidParameter
from gateway.domain.ports.queries import DEFAULT_PAGE_SIZE, Slice, Window

MAX_INT64 = 2**63 - 1  # event ids: a 64-bit column
MAX_INDEX = 2**31 - 1  # message indexes: a 32-bit column (PostgreSQL's integer)

T = TypeVar("T")

MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_next: bool
    has_prev: bool
    next_page_token: str | None
    prev_page_token: str | None


def page_size(raw: str | None, *, name: str = "page_size") -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer") from None
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidParameter(f"{name} must be between 1 and {MAX_PAGE_SIZE}")
    return value


def listing_page_size(query: Mapping[str, str]) -> int:
    """``page_size``, or ``limit`` (SignalWire's name, and the first one ``/v1/messages``
    published): the same thing on every listing, so giving both is refused rather than
    one silently ignored."""
    if "page_size" in query and "limit" in query:
        raise InvalidParameter("give page_size or limit (the same thing), not both")
    if "limit" in query:
        return page_size(query["limit"], name="limit")
    return page_size(query.get("page_size"))


def encode_token(payload: Mapping[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def window_from_token(payload: Mapping[str, Any], limit: int, *, key: str) -> Window:
    """``key`` names the listing's key shape: "index" (an integer) or "time_id"
    ([ISO time, id]); a token whose key has another shape was not issued for it."""
    start = payload.get("k")
    if start is not None and not _key_fits(start, key):
        raise InvalidPageToken("page_token does not belong to this listing")
    inclusive = payload.get("i", False)
    if not isinstance(inclusive, bool):
        raise InvalidPageToken("page_token is not a token this API issued")
    return Window(start=start, forward=payload["f"], limit=limit, inclusive=inclusive)


def _key_fits(start: Any, key: str) -> bool:
    """Only what this API could have issued: a message index the store can hold (a
    larger one would fail in the database driver, not be "not found"), or a time with
    a zone that stays within datetime's range once in UTC."""
    if key == "index":
        return (isinstance(start, int) and not isinstance(start, bool)
                and 0 <= start <= MAX_INDEX)
    if not (isinstance(start, list) and len(start) == 2
            and all(isinstance(part, str) for part in start)):
        return False
    return _utc_or_none(start[0]) is not None


def _utc_or_none(raw: str) -> datetime | None:
    """``raw`` as an aware time in UTC, or None: naive (ours always carry UTC, so a
    naive one is forged), malformed, or past year 1…9999 once moved to UTC (the
    database driver would otherwise fail converting it)."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return in_utc(moment)


def in_utc(moment: datetime) -> datetime | None:
    """An aware time in UTC, or None when UTC falls outside datetime's years 1…9999
    (``0001-01-01T00:00+05:00`` is in year 0 in UTC)."""
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def token_time(payload: Mapping[str, Any], name: str) -> datetime | None:
    raw = payload.get(name)
    if raw is None:
        return None
    value = _utc_or_none(raw) if isinstance(raw, str) else None
    if value is None:
        raise InvalidPageToken("page_token does not belong to this listing")
    return value


def token_choice(payload: Mapping[str, Any], name: str, choices: Collection[str]) -> str | None:
    """A filter the token carries as one of ``choices`` (absent: None)."""
    raw = payload.get(name)
    if raw is not None and raw not in choices:
        raise InvalidPageToken("page_token does not belong to this listing")
    return cast(str | None, raw)


def decode_token(token: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidPageToken("page_token is not a token this API issued") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("f"), bool):
        raise InvalidPageToken("page_token is not a token this API issued")
    return payload


def make_page(
    found: Slice[T], window: Window, *, key_of: Callable[[T], Any],
    filters: Mapping[str, Any],
) -> Page[T]:
    """Turns a slice into a page with tokens pointing both ways. ``filters`` travel in the
    tokens so a follow-up request needs nothing but the token."""
    items = found.items
    if window.forward:
        has_next, has_prev = found.more, found.behind
    else:
        has_next, has_prev = found.behind, found.more
    if not items:
        # An empty page past the end still lets the caller step back from where it stood.
        back = window.start is not None and (has_prev if window.forward else has_next)
        # the window's own start row (if any) was not on this page: include it going back
        token = (encode_token({**filters, "k": window.start, "f": not window.forward,
                               "i": not window.inclusive}) if back else None)
        return Page(items, has_next, has_prev,
                    token if not window.forward else None,
                    token if window.forward else None)
    next_token = (encode_token({**filters, "k": key_of(items[-1]), "f": True})
                  if has_next else None)
    prev_token = (encode_token({**filters, "k": key_of(items[0]), "f": False})
                  if has_prev else None)
    return Page(items, has_next, has_prev, next_token, prev_token)
