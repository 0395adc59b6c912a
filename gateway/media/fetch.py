"""Fetching a URL on a stranger's behalf: a wallet's remote attachment, a phone's MMS.

What keeps it from being turned against us or our network:

- https only (plain http only with ``allow_insecure``, for local development), no
  user:password in URLs;
- every address connected to is checked (``addresses.refusal``): literal addresses
  before the request, names inside the resolver, so the connection goes to exactly the
  addresses that were checked (a name that resolves to a public address when checked
  and a private one when connecting cannot slip through: there is one resolution);
- redirects are followed here, bounded, each hop checked like the first;
- size and time are capped while streaming: a Content-Length over the cap is refused
  before the body, and the body is abandoned as soon as it passes the cap;
- no cookies, no proxies from the environment, no compression (a small body must not
  inflate past the cap);
- credentials (Twilio's, as HTTP basic auth) go only to the hosts they are for, and
  only while every hop so far was one of them: a redirect elsewhere drops them for good.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.errors import MediaFetchFailed, MediaRefused, first_line
from gateway.media.addresses import parse_address, refusal

REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024

# Twilio's media: api.twilio.com (and its regional edges, api.<edge>.<region>.twilio.com)
# answer with a redirect to a short-lived URL on mms.twiliocdn.com (older media:
# s3-external-1.amazonaws.com, a signed URL that needs no credentials and would refuse
# a second kind of authentication).
TWILIO_MEDIA_HOSTS = ("api.twilio.com", "api.*.twilio.com", "*.twiliocdn.com")


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    max_bytes: int
    timeout_seconds: float = 30.0
    allow_insecure: bool = False  # plain http and loopback addresses (local development)
    max_redirects: int = 5
    # The media type (lowercase, no parameters) is offered here before the body is read.
    accept: Callable[[str], bool] | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """HTTP basic credentials and where they may go: host patterns (``api.twilio.com``,
    ``*.twiliocdn.com``: https only) or origins (``http://127.0.0.1:8788``: exactly that
    scheme, host and port, for a simulator)."""

    username: str
    password: str = field(repr=False)
    scopes: tuple[str, ...]

    def covers(self, url: URL) -> bool:
        host = (url.host or "").lower().rstrip(".")
        for scope in self.scopes:
            if "://" in scope:
                if URL(scope).origin() == url.origin():
                    return True
            elif url.scheme == "https" and _host_matches(host, scope.lower()):
                return True
        return False


def _host_matches(host: str, pattern: str) -> bool:
    """``*`` stands for one or more whole labels."""
    if "*" not in pattern:
        return host == pattern
    head, _, tail = pattern.partition("*")
    middle = host[len(head):len(host) - len(tail)] if len(host) > len(head) + len(tail) else ""
    return (host.startswith(head) and host.endswith(tail) and bool(middle)
            and not middle.startswith(".") and not middle.endswith("."))


def twilio_credentials(account_sid: str, auth_token: str, *,
                       extra_origins: tuple[str, ...] = ()) -> Credentials:
    """Twilio's account credentials for its media hosts; ``extra_origins`` adds a
    simulator's base URL."""
    return Credentials(account_sid, auth_token, (*TWILIO_MEDIA_HOSTS, *extra_origins))


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    url: str  # where the bytes came from, after redirects
    content_type: str  # lowercase, without parameters
    data: bytes = field(repr=False)


class _CheckingResolver(AbstractResolver):
    """Resolves names and keeps only addresses the policy allows: the connector
    connects to what this returns, so what is checked is what is connected to."""

    def __init__(self, inner: AbstractResolver, *, allow_loopback: bool) -> None:
        self._inner = inner
        self._allow_loopback = allow_loopback

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for result in found:
            address = parse_address(result["host"])
            reason = ("not an address" if address is None
                      else refusal(address, allow_loopback=self._allow_loopback))
            if reason is None:
                allowed.append(result)
            else:
                reasons.append(reason)
        if not allowed:
            raise MediaRefused(f"{host} resolves only to addresses we do not fetch from "
                               f"({', '.join(sorted(set(reasons))) or 'none found'})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class MediaFetcher:
    """``async with MediaFetcher(policy) as fetcher: await fetcher.fetch(url)``.

    ``resolver`` stands in for DNS in tests (names on 127.0.0.1 or a private address)."""

    def __init__(self, policy: FetchPolicy, *, resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        checking = _CheckingResolver(self._resolver or aiohttp.ThreadedResolver(),
                                     allow_loopback=self.policy.allow_insecure)
        connector = aiohttp.TCPConnector(resolver=checking, use_dns_cache=False,
                                         limit_per_host=4)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            headers={"User-Agent": "gateway-media/1", "Accept-Encoding": "identity"})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, *, credentials: Credentials | None = None,
                    max_bytes: int | None = None) -> FetchedMedia:
        """The bytes at ``url``. ``max_bytes`` lowers the policy's cap (what is left of
        a message's budget). Raises ``MediaRefused`` (policy) or ``MediaFetchFailed``."""
        if self._session is None:
            raise RuntimeError("use MediaFetcher inside 'async with'")
        cap = self.policy.max_bytes if max_bytes is None else min(max_bytes,
                                                                   self.policy.max_bytes)
        try:
            async with asyncio.timeout(self.policy.timeout_seconds):
                return await self._follow(self._session, _parse(url), credentials, cap)
        except TimeoutError:
            raise MediaFetchFailed(f"timed out after {self.policy.timeout_seconds:g}s",
                                   retryable=True) from None

    async def _follow(self, session: aiohttp.ClientSession, url: URL,
                      credentials: Credentials | None, cap: int) -> FetchedMedia:
        trusted = credentials  # dropped for good once a hop leaves its scopes
        for _hop in range(self.policy.max_redirects + 1):
            self._check(url)
            if trusted is not None and not trusted.covers(url):
                trusted = None
            headers = ({"Authorization": aiohttp.encode_basic_auth(trusted.username,
                                                                  trusted.password)}
                       if trusted else {})
            try:
                async with session.get(url, allow_redirects=False, headers=headers) as response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        url = _parse(str(url.join(URL(response.headers["Location"]))))
                        continue
                    return await self._read(response, url, cap, credentialed=trusted is not None)
            except (aiohttp.InvalidURL, ValueError) as exc:
                raise MediaRefused(f"not a URL we can fetch: {first_line(exc)}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise MediaFetchFailed(f"{url.host}: {first_line(exc)}",
                                       retryable=True) from exc
        raise MediaRefused(f"more than {self.policy.max_redirects} redirects")

    def _check(self, url: URL) -> None:
        allowed = ("https", "http") if self.policy.allow_insecure else ("https",)
        if url.scheme not in allowed:
            raise MediaRefused(f"{url.scheme or 'no'} scheme: only {' or '.join(allowed)}")
        if url.user is not None or url.password is not None:
            raise MediaRefused("URLs with credentials in them are not fetched")
        if not url.host:
            raise MediaRefused("the URL names no host")
        address = parse_address(url.host)
        if address is not None:  # the connector skips the resolver for literal addresses
            reason = refusal(address, allow_loopback=self.policy.allow_insecure)
            if reason is not None:
                raise MediaRefused(f"{url.host} is {reason}")

    async def _read(self, response: aiohttp.ClientResponse, url: URL, cap: int, *,
                    credentialed: bool) -> FetchedMedia:
        if response.status != 200:
            # Twilio answers 404 for a moment after its webhook, until the media has
            # propagated: on its hosts a 404 is worth another try.
            retryable = (response.status >= 500 or response.status in (408, 425, 429)
                         or (credentialed and response.status == 404))
            raise MediaFetchFailed(f"{url.host} answered {response.status}",
                                   retryable=retryable, status=response.status)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise MediaRefused(f"compressed media ({encoding}) is not accepted")
        content_type = response.content_type.lower()
        if self.policy.accept is not None and not self.policy.accept(content_type):
            raise MediaRefused(f"content type {content_type} is not allowed")
        if response.content_length is not None and response.content_length > cap:
            raise MediaRefused(f"{response.content_length} bytes is over the {cap}-byte cap")
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > cap:
                raise MediaRefused(f"more than the {cap}-byte cap")
        return FetchedMedia(url=str(url), content_type=content_type, data=bytes(body))


def _parse(url: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise MediaRefused(f"not a URL: {first_line(exc)}") from exc
    if not parsed.is_absolute():
        raise MediaRefused("not an absolute URL")
    return parsed
