"""Reading request input: JSON bodies checked field by field, query parameters parsed
into typed values, each failure a 400 that names the field."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from gateway.api.errors import ApiError, InvalidBody, InvalidParameter

E = TypeVar("E", bound=enum.Enum)

MAX_NAME = 255


async def json_object(request: web.Request, *, allowed: set[str]) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidBody("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidBody("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidBody(f"unknown field(s): {', '.join(unknown)}")
    return body


def optional_name(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise InvalidBody(f"{field} must be a non-empty string of at most {MAX_NAME} characters")
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
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidBody(f"{field} must be a JSON object")
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


def query_int(request: web.Request, name: str, *, minimum: int = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer") from None
    if value < minimum:
        raise InvalidParameter(f"{name} must be at least {minimum}")
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
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
