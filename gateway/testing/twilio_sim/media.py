"""Media in the simulator, both ways, as Twilio does it.

- Inbound: media a phone sends is hosted here under Twilio's URL shape,
  ``/2010-04-01/Accounts/AC…/Messages/MM…/Media/ME…``, behind HTTP basic auth with the
  account's credentials (Twilio enforces it on media URLs), answering with a redirect
  to a short-lived URL that needs no credentials (Twilio's mms.twiliocdn.com), here
  ``/_sim/cdn/<token>``. The Media list and instance resources (``.json``) answer too.
- Outbound: each ``MediaUrl`` of a create is fetched as Twilio would (redirects
  followed, at most 5 MB in all, a content type Twilio accepts); what was fetched is
  kept as the message's media, and a URL that cannot be fetched fails the message with
  Twilio's code. The simulator works offline: a URL not on this machine (loopback) is
  never fetched and fails like an unreachable one.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.testing.twilio_sim.wire import API_VERSION, error_response, new_sid

MAX_MEDIA = 10
MAX_MEDIA_BYTES = 5 * 1024 * 1024
CDN_PATH = "/_sim/cdn"
# Twilio's accepted content types for outbound media (its "Accepted Content Types for
# Media" list), abridged to the families; anything else fails with 12300.
ACCEPTED_TYPES = ("image/", "audio/", "video/", "text/vcard", "text/x-vcard", "text/csv",
                  "text/rtf", "text/richtext", "text/calendar", "text/directory",
                  "application/pdf", "application/vcard", "application/vnd.")

HTTP_RETRIEVAL_FAILURE = 11200
INVALID_CONTENT_TYPE = 12300
CONTENT_TOO_LARGE = 30019
INVALID_MEDIA_URL = 21620
TOO_MANY_MEDIA = 21623
MEDIA_ERRORS = {
    HTTP_RETRIEVAL_FAILURE: "HTTP retrieval failure",
    INVALID_CONTENT_TYPE: "Invalid Content-Type",
    CONTENT_TOO_LARGE: "Content size exceeds carrier limit",
}


@dataclass(frozen=True, slots=True)
class SimMedia:
    """One Media resource: a file a phone sent, or one Twilio fetched for a send."""

    sid: str  # ME…
    parent_sid: str  # the message's MM… sid
    account_sid: str
    content_type: str
    data: bytes = field(repr=False)
    date_created: datetime
    source_url: str | None = None  # the MediaUrl it was fetched from (outbound)

    @property
    def uri(self) -> str:
        return (f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.parent_sid}"
                f"/Media/{self.sid}")

    def to_json(self) -> dict[str, Any]:
        return {"account_sid": self.account_sid, "content_type": self.content_type,
                "date_created": format_datetime(self.date_created, usegmt=True),
                "date_updated": format_datetime(self.date_created, usegmt=True),
                "parent_sid": self.parent_sid, "sid": self.sid, "uri": self.uri + ".json"}


def validate_media_urls(urls: Sequence[str]) -> tuple[int, int, str] | None:
    """What Twilio refuses at once, before fetching anything."""
    if len(urls) > MAX_MEDIA:
        return 400, TOO_MANY_MEDIA, f"Too many media: {len(urls)} (at most {MAX_MEDIA})"
    for url in urls:
        if not url.startswith(("http://", "https://")):
            return 400, INVALID_MEDIA_URL, f"Media URL {url!r} is not a valid http(s) URL"
    return None


class MediaHost:
    """The simulator's media: what it hosts and what it fetched, by ME sid."""

    def __init__(self, account_sid: str, *, require_auth: bool,
                 authenticate: Callable[[web.Request], None]) -> None:
        self.account_sid = account_sid
        self.require_auth = require_auth
        self._authenticate = authenticate
        self.items: dict[str, SimMedia] = {}
        self._cdn: dict[str, str] = {}  # token -> ME sid
        self.media_fetches: list[str] = []  # every GET of a hosted media URL (its path)

    def host(self, parent_sid: str, data: bytes, content_type: str) -> SimMedia:
        media = SimMedia(sid=new_sid("ME"), parent_sid=parent_sid,
                         account_sid=self.account_sid, content_type=content_type, data=data,
                         date_created=datetime.now(UTC))
        self.items[media.sid] = media
        return media

    def of(self, parent_sid: str) -> list[SimMedia]:
        return [m for m in self.items.values() if m.parent_sid == parent_sid]

    def add_routes(self, app: web.Application, base: str) -> None:
        """``base``: the Messages resource path, ``/2010-04-01/Accounts/{account_sid}/
        Messages``. ``.json`` routes first: the bare media route would match them too."""
        media = base + "/{sid}/Media"
        app.router.add_get(media + ".json", self._list)
        app.router.add_get(media + "/{media_sid}.json", self._instance)
        app.router.add_get(media + "/{media_sid:ME[0-9a-f]{32}}", self._content)
        app.router.add_get(CDN_PATH + "/{token}", self._cdn_content)

    async def _list(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        found = self.of(request.match_info["sid"])
        path = request.path
        return web.json_response({
            "media_list": [m.to_json() for m in found], "end": max(len(found) - 1, 0),
            "first_page_uri": path, "next_page_uri": None, "page": 0, "page_size": 50,
            "previous_page_uri": None, "start": 0, "uri": path})

    def _find(self, request: web.Request) -> SimMedia:
        media = self.items.get(request.match_info["media_sid"])
        if media is None or media.parent_sid != request.match_info["sid"]:
            raise web.HTTPNotFound(
                text=error_response(404, 20404, f"The requested resource {request.path} "
                                    "was not found").text, content_type="application/json")
        return media

    async def _instance(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        return web.json_response(self._find(request).to_json())

    async def _content(self, request: web.Request) -> web.Response:
        self.media_fetches.append(request.path)
        if self.require_auth:
            self._authenticate(request)
        media = self._find(request)
        token = secrets.token_urlsafe(24)
        self._cdn[token] = media.sid
        raise web.HTTPTemporaryRedirect(f"{CDN_PATH}/{token}")

    async def _cdn_content(self, request: web.Request) -> web.Response:
        media = self.items.get(self._cdn.get(request.match_info["token"], ""))
        if media is None:
            raise web.HTTPNotFound()
        return web.Response(body=media.data, headers={"Content-Type": media.content_type})

    async def fetch_for_send(self, session: aiohttp.ClientSession, parent_sid: str,
                             urls: Sequence[str]) -> int | None:
        """Fetches a send's MediaUrls and keeps them as its media; Twilio's error code
        when one cannot be used (nothing is kept then)."""
        fetched: list[SimMedia] = []
        total = 0
        for url in urls:
            if not _on_this_machine(url):
                return HTTP_RETRIEVAL_FAILURE  # offline: the simulator reaches nothing else
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=30),
                                       max_redirects=5) as response:
                    if response.status != 200 or "Content-Type" not in response.headers:
                        return HTTP_RETRIEVAL_FAILURE
                    content_type = response.content_type.lower()
                    if not content_type.startswith(ACCEPTED_TYPES):
                        return INVALID_CONTENT_TYPE
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        body += chunk
                        if total + len(body) > MAX_MEDIA_BYTES:
                            return CONTENT_TOO_LARGE
            except (aiohttp.ClientError, OSError, TimeoutError):
                return HTTP_RETRIEVAL_FAILURE
            data = bytes(body)
            total += len(data)
            fetched.append(SimMedia(
                sid=new_sid("ME"), parent_sid=parent_sid, account_sid=self.account_sid,
                content_type=content_type, data=data, date_created=datetime.now(UTC),
                source_url=url))
        for media in fetched:
            self.items[media.sid] = media
        return None


def _on_this_machine(url: str) -> bool:
    host = (URL(url).host or "").strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def media_json(items: Sequence[SimMedia], *,
               with_data: bool = True) -> list[Mapping[str, Any]]:
    """For the control API (a test tool: the bytes come along, base64, unless not
    wanted)."""
    return [{"sid": m.sid, "content_type": m.content_type, "size": len(m.data),
             "source_url": m.source_url,
             **({"data_base64": base64.b64encode(m.data).decode()} if with_data else {})}
            for m in items]
