"""Reading request input: JSON bodies checked field by field, query parameters parsed
into typed values, each failure a 400 that names the field."""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from gateway.api.errors import ApiError, InvalidBody, InvalidParameter
from gateway.api.pagination import MAX_INT64, in_utc
from gateway.api.refs import looks_like_conversation_id
from gateway.domain.models import Consent

E = TypeVar("E", bound=enum.Enum)

MAX_NAME = 255
DOT_SEGMENTS = (".", "..")
MAX_DEPTH = 32  # levels of nesting inside a field
MAX_ATTRIBUTES_BYTES = 16 * 1024


class _NotStrictJson(ValueError):
    """A number JSON itself does not allow (NaN, Infinity, or one too large for a float):
    Python's json accepts them, but what we stored would echo back as invalid JSON."""


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise _NotStrictJson(f"the number {raw[:20]} is too large")
    return value


def _no_constant(raw: str) -> Any:
    raise _NotStrictJson(f"{raw} is not a JSON number")


def _strict_loads(text: str) -> Any:
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)


async def json_object(request: web.Request, *, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object of ``allowed`` fields, in strict JSON: every number
    finite and every string valid Unicode, nothing nested deeper than ``MAX_DEPTH``, so
    whatever is stored can be echoed back and read by any JSON client."""
    try:
        text = await request.text()
    except (UnicodeDecodeError, LookupError):  # LookupError: an unknown charset
        raise InvalidBody("the body must be a JSON object") from None
    _check_depth(text)
    try:
        body = _strict_loads(text)
    except _NotStrictJson as exc:
        raise InvalidBody(f"the body is not valid JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        # ValueError covers JSONDecodeError and integers past Python's digit limit
        raise InvalidBody("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidBody(f"unknown field(s): {', '.join(unknown)}")
    broken = _lone_surrogate_at(body)
    if broken is not None:
        raise InvalidBody(f"{broken} is not valid Unicode (it holds a lone surrogate)")
    return body


# One JSON token a depth count cares about: a whole string (brackets inside it do not
# count), or a bracket.
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _check_depth(text: str) -> None:
    """Refuses a field nested deeper than ``MAX_DEPTH`` before parsing: the parser only
    copes with a 5,000-deep body because a dependency raised Python's recursion limit,
    and what it stored would then break every client that reads it back (Python's own
    json raises RecursionError past ~1,000 levels). Counted on the text, without
    recursion; the body object itself is level 0, so ``{"attributes": {}}`` is 1."""
    depth = 0
    field = "the body"
    for token in _DEPTH_TOKENS.finditer(text):
        char = token.group()[0]
        if char == '"':
            if depth == 1:
                field = token.group()  # a top-level name (or value) as written
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH + 1:
                raise InvalidBody(f"{_field_name(field)} is nested more than {MAX_DEPTH} "
                                  "levels deep")
        else:
            depth -= 1


def _field_name(token: str) -> str:
    try:
        name = json.loads(token)
    except ValueError:
        return token
    return name if isinstance(name, str) else token


def _lone_surrogate_at(body: dict[str, Any]) -> str | None:
    """Where a string (a value or a key) that UTF-8 cannot encode sits, as a path
    such as ``attributes.tags[2]``; JSON's ``\\ud800`` escapes decode to such strings, and
    the store (or the response) would then fail with a 500. Walked without recursion:
    the parser already went as deep as the input does. Top-level names are checked
    against the allowed fields before this."""
    pending: list[tuple[str, Any]] = [(key, value) for key, value in body.items()]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _encodable(key):
                    return path
                pending.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def optional_name(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidBody(f"{field} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def optional_unique_name(body: Mapping[str, Any], field: str = "unique_name") -> str | None:
    """Any name a route's ``{ref}`` can carry: not an id's shape, and not "." or "..",
    which URLs resolve as path steps (``/v1/conversations/../messages`` is
    ``/v1/messages``), however they are escaped."""
    value = optional_name(body, field)
    if value is not None and looks_like_conversation_id(value):
        raise InvalidBody(f"{field} must not look like a conversation id (CH and 32 hex "
                          "digits): routes would take it for one")
    if value in DOT_SEGMENTS:
        raise InvalidBody(f"{field} must not be '.' or '..': a URL cannot name it")
    return value


def optional_text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidBody(f"{field} must be a string")
    return value


def required_text(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidBody(f"{field} is required and must be a string")
    return value


def attributes(body: Mapping[str, Any], field: str = "attributes") -> dict[str, Any]:
    """A JSON object of at most ``MAX_ATTRIBUTES_BYTES`` as compact UTF-8 JSON (Twilio
    Conversations' limit, 16 KiB), so a resource stays small enough to list by the
    hundred."""
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidBody(f"{field} must be a JSON object")
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidBody(f"{field} is {size} bytes as JSON; at most {MAX_ATTRIBUTES_BYTES} "
                          "(16 KiB)")
    return value


def string_list(body: Mapping[str, Any], field: str, *, max_items: int = 10) -> list[str]:
    value = body.get(field)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list) or len(value) > max_items
            or not all(isinstance(v, str) and v.startswith(("https://", "http://"))
                       for v in value)):
        raise InvalidBody(f"{field} must be a list of at most {max_items} http(s) URLs")
    return value


def enum_value(
    cls: type[E], raw: Any, field: str, *, allowed: set[E] | None = None,
    error: type[ApiError] = InvalidParameter,
) -> E:
    choices = allowed or set(cls)
    for member in choices:
        if raw == member.value:
            return member
    names = ", ".join(sorted(str(m.value) for m in choices))
    raise error(f"{field} must be one of: {names}")


def consent_filter(raw: str, name: str = "consent") -> frozenset[Consent]:
    """``allowed``, ``unknown``, ``denied``, or several comma-separated (any of them), as
    XMTP's ``consentStates`` takes a list."""
    wanted = set(raw.split(","))
    found = frozenset(c for c in Consent if c.value in wanted)
    if len(found) != len(wanted):
        raise InvalidParameter(f"{name} must be a comma-separated list of: "
                               f"{', '.join(c.value for c in Consent)}")
    return found


def query_int(request: web.Request, name: str, *, minimum: int = 0,
              maximum: int = MAX_INT64) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    return bounded_int(raw, name, minimum=minimum, maximum=maximum)


def bounded_int(raw: str, name: str, *, minimum: int = 0, maximum: int = MAX_INT64) -> int:
    """An integer the store can hold (by default a 64-bit signed column), at least
    ``minimum``: a larger one would fail in the database driver, not match nothing."""
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer") from None
    if value < minimum:
        raise InvalidParameter(f"{name} must be at least {minimum}")
    if value > maximum:
        raise InvalidParameter(f"{name} must be at most {maximum}")
    return value


def query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidParameter(f"{name} must be true or false")
    return raw in ("true", "1")


def query_time(request: web.Request, name: str) -> datetime | None:
    """A Unix timestamp in seconds (as in SignalWire's since/until) or an ISO 8601 time;
    one without a zone is taken as UTC."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidParameter(f"{name} is out of range") from None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be a Unix timestamp or an ISO 8601 time") from None
    found = in_utc(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if found is None:
        raise InvalidParameter(f"{name} is out of range")
    return found
