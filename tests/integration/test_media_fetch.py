"""The untrusted-URL fetcher against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from gateway.errors import MediaFetchFailed, MediaRefused
from gateway.media.fetch import Credentials, FetchPolicy, MediaFetcher, twilio_credentials
from tests.ports import free_port

LOCAL = FetchPolicy(max_bytes=10_000, timeout_seconds=5.0, allow_insecure=True)
UNSPECIFIED = "0.0.0." + "0"  # not a bind: an address a hostile DNS may answer
PICTURE = b"\x89PNG\r\n" + bytes(range(256)) * 8


class FixedResolver(AbstractResolver):
    """DNS for tests: every name resolves to the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.calls.append(host)
        return [{"hostname": host, "host": a, "port": port,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.addresses]

    async def close(self) -> None:
        return None


class Origin:
    """One local server: records every request's path and Authorization header."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.seen: list[tuple[str, str | None]] = []
        self.url = ""
        self.release = asyncio.Event()  # handlers that hang wait for this

        @web.middleware
        async def record(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         ) -> web.StreamResponse:
            self.seen.append((request.path, request.headers.get("Authorization")))
            return await handler(request)

        self.app.middlewares.append(record)
        self.handlers: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}

        async def dispatch(request: web.Request) -> web.StreamResponse:
            handler = self.handlers.get(request.path)
            if handler is None:
                raise web.HTTPNotFound()
            return await handler(request)

        self.app.router.add_get("/{tail:.*}", dispatch)

    def route(self, path: str, handler: Callable[[web.Request],
                                                 Awaitable[web.StreamResponse]]) -> None:
        self.handlers[path] = handler  # the router is frozen once the server runs


Origins = Callable[[], Awaitable[Origin]]


@pytest.fixture
async def origins() -> AsyncIterator[Callable[[], Awaitable[Origin]]]:
    servers: list[tuple[Origin, TestServer]] = []

    async def start() -> Origin:
        origin = Origin()
        server = TestServer(origin.app, host="127.0.0.1")
        await server.start_server()
        origin.url = str(server.make_url("")).rstrip("/")
        servers.append((origin, server))
        return origin

    yield start
    for origin, server in servers:
        origin.release.set()
        await server.close()


async def picture(request: web.Request) -> web.Response:
    return web.Response(body=PICTURE, content_type="image/png")


async def fetch(url: str, policy: FetchPolicy = LOCAL, *, resolver: AbstractResolver | None = None,
                credentials: Credentials | None = None, max_bytes: int | None = None) -> bytes:
    async with MediaFetcher(policy, resolver=resolver) as fetcher:
        got = await fetcher.fetch(url, credentials=credentials, max_bytes=max_bytes)
    return got.data


class TestFetching:
    async def test_the_bytes_and_content_type_come_back(self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        async with MediaFetcher(LOCAL) as fetcher:
            got = await fetcher.fetch(origin.url + "/p.png")
        assert (got.data, got.content_type, got.url) == (PICTURE, "image/png",
                                                         origin.url + "/p.png")

    async def test_a_name_is_resolved_and_checked(self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        port = origin.url.rsplit(":", 1)[1]
        resolver = FixedResolver("127.0.0.1")
        assert await fetch(f"http://media.example:{port}/p.png", resolver=resolver) == PICTURE
        assert resolver.calls == ["media.example"]


class TestRefusedDestinations:
    async def test_plain_http_is_refused_unless_allowed(self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        with pytest.raises(MediaRefused, match="only https"):
            await fetch(origin.url + "/p.png", FetchPolicy(max_bytes=10_000))
        assert origin.seen == []

    async def test_a_loopback_address_is_refused_unless_allowed(self, origins: Origins) -> None:
        origin = await origins()
        port = origin.url.rsplit(":", 1)[1]
        secure = FetchPolicy(max_bytes=10_000)
        for url in (f"https://127.0.0.1:{port}/p.png", f"https://[::1]:{port}/p.png",
                    f"https://[::ffff:127.0.0.1]:{port}/p.png"):
            with pytest.raises(MediaRefused, match="loopback"):
                await fetch(url, secure)
        assert origin.seen == []

    async def test_a_name_resolving_to_loopback_is_refused_at_resolution(
            self, origins: Origins) -> None:
        origin = await origins()
        port = origin.url.rsplit(":", 1)[1]
        resolver = FixedResolver("127.0.0.1", UNSPECIFIED)
        with pytest.raises(MediaRefused, match="resolves only to addresses we do not fetch"):
            await fetch(f"https://rebind.example:{port}/p.png", FetchPolicy(max_bytes=10_000),
                        resolver=resolver)
        assert resolver.calls == ["rebind.example"] and origin.seen == []

    async def test_only_the_allowed_addresses_of_a_name_are_connected_to(
            self, origins: Origins) -> None:
        """0.0.0.0 comes first and would reach this host; it is dropped, and the fetch
        goes to 127.0.0.1, the one address that was allowed."""
        origin = await origins()
        origin.route("/p.png", picture)
        port = origin.url.rsplit(":", 1)[1]
        resolver = FixedResolver(UNSPECIFIED, "127.0.0.1")
        assert await fetch(f"http://mixed.example:{port}/p.png", resolver=resolver) == PICTURE

    @pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd",
                                     "http://user:pw@127.0.0.1/x", "/relative/x", "https://"])
    async def test_urls_of_other_kinds_are_refused(self, url: str) -> None:
        with pytest.raises(MediaRefused):
            await fetch(url)


class TestRedirects:
    async def test_redirects_are_followed_and_each_hop_checked(self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)

        async def hop(request: web.Request) -> web.Response:
            raise web.HTTPFound("/p.png")

        origin.route("/a", hop)
        assert await fetch(origin.url + "/a") == PICTURE
        assert [path for path, _ in origin.seen] == ["/a", "/p.png"]

    @pytest.mark.parametrize("target", ["http://0.0.0.0:{port}/p.png",
                                        "ftp://example.org/p.png",
                                        "http://user:pw@127.0.0.1:{port}/p.png"])
    async def test_a_redirect_to_a_refused_destination_is_refused(
            self, origins: Origins, target: str) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        port = origin.url.rsplit(":", 1)[1]

        async def hop(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target.format(port=port))

        origin.route("/a", hop)
        with pytest.raises(MediaRefused):
            await fetch(origin.url + "/a")
        assert [path for path, _ in origin.seen] == ["/a"]

    async def test_redirects_are_bounded(self, origins: Origins) -> None:
        origin = await origins()

        async def loop(request: web.Request) -> web.Response:
            raise web.HTTPFound("/loop")

        origin.route("/loop", loop)
        with pytest.raises(MediaRefused, match="more than 3 redirects"):
            await fetch(origin.url + "/loop", FetchPolicy(max_bytes=100, allow_insecure=True,
                                                          max_redirects=3))
        assert len(origin.seen) == 4


class TestCaps:
    async def test_a_declared_length_over_the_cap_is_refused_before_the_body(
            self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        with pytest.raises(MediaRefused, match="over the 100-byte cap"):
            await fetch(origin.url + "/p.png", max_bytes=100)

    async def test_an_undeclared_body_is_cut_off_at_the_cap_while_streaming(
            self, origins: Origins) -> None:
        """The server sends more than the cap, then never finishes: only a fetcher that
        stops at the cap returns (a refusal) instead of waiting for the end."""
        origin = await origins()

        async def endless(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"x" * 20_000)
            await origin.release.wait()
            return response

        origin.route("/endless", endless)
        with pytest.raises(MediaRefused, match="more than the 10000-byte cap"):
            await fetch(origin.url + "/endless")

    async def test_a_slow_server_is_abandoned_at_the_time_cap(self, origins: Origins) -> None:
        origin = await origins()

        async def stalls(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b"x" * 10)
            await origin.release.wait()
            return response

        origin.route("/slow", stalls)
        policy = FetchPolicy(max_bytes=10_000, timeout_seconds=0.3, allow_insecure=True)
        with pytest.raises(MediaFetchFailed, match="timed out") as info:
            await fetch(origin.url + "/slow", policy)
        assert info.value.retryable

    async def test_a_content_type_not_accepted_is_refused(self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        policy = FetchPolicy(max_bytes=10_000, allow_insecure=True,
                             accept=lambda kind: kind.startswith("video/"))
        with pytest.raises(MediaRefused, match="image/png is not allowed"):
            await fetch(origin.url + "/p.png", policy)

    async def test_compressed_bodies_are_refused(self, origins: Origins) -> None:
        origin = await origins()

        async def gzipped(request: web.Request) -> web.Response:
            return web.Response(body=b"\x1f\x8b...", content_type="image/png",
                                headers={"Content-Encoding": "gzip"})

        origin.route("/z", gzipped)
        with pytest.raises(MediaRefused, match="compressed"):
            await fetch(origin.url + "/z")


class TestAnswers:
    @pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False),
                                                       (503, True), (429, True)])
    async def test_an_error_status_fails_and_says_whether_to_retry(
            self, origins: Origins, status: int, retryable: bool) -> None:
        origin = await origins()

        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=status)

        origin.route("/x", answer)
        with pytest.raises(MediaFetchFailed) as info:
            await fetch(origin.url + "/x")
        assert (info.value.status, info.value.retryable) == (status, retryable)

    async def test_a_refused_connection_is_retryable(self) -> None:
        port = free_port()  # nothing listens there
        with pytest.raises(MediaFetchFailed) as info:
            await fetch(f"http://127.0.0.1:{port}/x")
        assert info.value.retryable


class TestCredentials:
    async def test_credentials_go_to_their_scope_and_never_after_leaving_it(
            self, origins: Origins) -> None:
        twilio, cdn = await origins(), await origins()
        creds = Credentials("AC123", "secret-token", (twilio.url,))

        async def media(request: web.Request) -> web.Response:  # Twilio: to its own CDN
            raise web.HTTPTemporaryRedirect(cdn.url + "/signed")

        async def signed(request: web.Request) -> web.Response:  # and back again
            raise web.HTTPFound(twilio.url + "/p.png")

        twilio.route("/Media/ME1", media)
        twilio.route("/p.png", picture)
        cdn.route("/signed", signed)
        assert await fetch(twilio.url + "/Media/ME1", credentials=creds) == PICTURE
        expected = "Basic " + base64.b64encode(b"AC123:secret-token").decode()
        assert twilio.seen == [("/Media/ME1", expected), ("/p.png", None)]
        assert cdn.seen == [("/signed", None)]

    async def test_credentials_for_twilios_hosts_are_not_sent_elsewhere(
            self, origins: Origins) -> None:
        origin = await origins()
        origin.route("/p.png", picture)
        creds = twilio_credentials("AC123", "secret-token")
        assert await fetch(origin.url + "/p.png", credentials=creds) == PICTURE
        assert origin.seen == [("/p.png", None)]

    async def test_a_404_from_twilio_is_worth_another_try(self, origins: Origins) -> None:
        origin = await origins()

        async def not_yet(request: web.Request) -> web.Response:
            return web.Response(status=404)

        origin.route("/Media/ME1", not_yet)
        creds = Credentials("AC123", "secret-token", (origin.url,))
        with pytest.raises(MediaFetchFailed) as info:
            await fetch(origin.url + "/Media/ME1", credentials=creds)
        assert info.value.retryable
