"""The client's one door to the API: JSON requests with the bearer token, error answers
turned into ``ApiResponseError`` carrying the API's stable code."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp

from gateway.errors import GatewayError


class ApiResponseError(GatewayError):
    """The API refused: ``status`` is the HTTP status, ``code`` its stable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"{status} {code}: {message}")


def query_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def query(**values: Any) -> dict[str, str]:
    """Query parameters with the unset ones (None) left out."""
    return {k: query_value(v) for k, v in values.items() if v is not None}


class Http:
    def __init__(self, base_url: str, token: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"}

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: Mapping[str, str] | None = None) -> Any:
        async with self.session.request(method, self.url(path), json=json, params=params,
                                        headers=self.headers) as resp:
            if resp.status == 204:
                return None
            if resp.status >= 400:
                raise await error_of(resp)
            return await resp.json()


async def error_of(resp: aiohttp.ClientResponse) -> ApiResponseError:
    try:
        body = await resp.json(content_type=None)
        return ApiResponseError(resp.status, str(body["code"]), str(body["error"]))
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        return ApiResponseError(resp.status, f"http_{resp.status}", resp.reason or "")
