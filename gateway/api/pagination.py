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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from gateway.api.errors import InvalidPageToken, InvalidParameter
from gateway.domain.ports.queries import DEFAULT_PAGE_SIZE, Slice, Window

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


def encode_token(payload: Mapping[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def window_from_token(payload: Mapping[str, Any], limit: int, *, key: str) -> Window:
    """``key`` names the listing's key shape: "index" (an integer) or "time_id"
    ([ISO time, id]); a token whose key has another shape was not issued for it."""
    start = payload.get("k")
    if start is not None and not _key_fits(start, key):
        raise InvalidPageToken("page_token does not belong to this listing")
    return Window(start=start, forward=payload["f"], limit=limit,
                  inclusive=bool(payload.get("i", False)))


def _key_fits(start: Any, key: str) -> bool:
    if key == "index":
        return isinstance(start, int) and not isinstance(start, bool) and start >= 0
    if not (isinstance(start, list) and len(start) == 2
            and all(isinstance(part, str) for part in start)):
        return False
    try:
        moment = datetime.fromisoformat(start[0])
    except ValueError:
        return False
    return moment.tzinfo is not None  # ours always carry UTC; a naive one is forged


def token_time(payload: Mapping[str, Any], name: str) -> datetime | None:
    raw = payload.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidPageToken("page_token does not belong to this listing")
    return value


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
