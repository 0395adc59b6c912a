"""The devnode: both gRPC services over one SQLite store, startable in-process.

    async with DevNode.start(db=":memory:") as node:
        client = await XmtpClient.create(node.url, ...)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from gateway.errors import CannotListen
from gateway.xmtp.devnode.identity_service import IdentityService, InboxLimits
from gateway.xmtp.devnode.mls_service import MlsService
from gateway.xmtp.devnode.rate_limits import RateLimiter, RateLimits
from gateway.xmtp.devnode.storage import DevNodeStorage, StoredGroupMessage, StoredWelcome
from gateway.xmtp.devnode.subscriptions import DEFAULT_CAPACITY, Hub
from gateway.xmtp.devnode.unserved import UnservedCall, UnservedMethods

log = logging.getLogger("gateway.xmtp.devnode")

# libxmtp sends batches of welcomes and commits; the default 4 MiB is too tight for big groups
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# HTTP/2 keepalive as XMTP's v3 node allows it (xmtp-node-go: EnforcementPolicy
# PermitWithoutStream, MinTime 15 s; ServerParameters Time 5 min). libxmtp pings every
# 16 s, idle or not; grpc's default policy counts any ping closer than 5 min apart as a
# strike and, after two, closes the connection with GOAWAY "too_many_pings", which
# libxmtp reports as a failed stream about 65 s into any quiet subscription.
MIN_CLIENT_PING_INTERVAL_MS = 15_000
SERVER_PING_INTERVAL_MS = 5 * 60 * 1000
KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ("grpc.keepalive_time_ms", SERVER_PING_INTERVAL_MS),
)


class DevNode:
    """A running devnode. Create it with ``DevNode.start(...)``."""

    def __init__(self, server: grpc.aio.Server, storage: DevNodeStorage,
                 unserved: UnservedMethods, host: str, port: int,
                 rate_limiter: RateLimiter | None = None) -> None:
        self._server = server
        self._storage = storage
        self._unserved = unserved
        self.host = host
        self.port = port
        # what the rate limits counted and refused (None: no limits)
        self.rate_limiter = rate_limiter

    @property
    def unserved_calls(self) -> list[UnservedCall]:
        """The newest calls to methods the node does not serve (each got UNIMPLEMENTED)."""
        return list(self._unserved.calls)

    @property
    def url(self) -> str:
        """What libxmtp takes as its v3 host (plain HTTP/2 on loopback)."""
        return f"http://{self.host}:{self.port}"

    @classmethod
    async def open(cls, *, db: str = ":memory:", host: str = "127.0.0.1", port: int = 0,
                   subscriber_capacity: int = DEFAULT_CAPACITY,
                   limits: InboxLimits | None = None,
                   rate_limits: RateLimits | None = None) -> DevNode:
        """Starts serving; ``port=0`` picks a free port. Call ``close()`` when done.
        ``limits``: the inbox caps to enforce (``InboxLimits.xmtp()``: the network's);
        ``rate_limits``: the per-client request limits (``RateLimits.xmtp()``)."""
        storage = DevNodeStorage(db)
        groups: Hub[StoredGroupMessage] = Hub(subscriber_capacity)
        welcomes: Hub[StoredWelcome] = Hub(subscriber_capacity)
        limiter = (RateLimiter(rate_limits)
                   if rate_limits is not None and rate_limits.enforced else None)
        server = grpc.aio.server(interceptors=[limiter] if limiter else None, options=[
            ("grpc.so_reuseport", 0),  # a second node on the same port must fail, not share
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            *KEEPALIVE_OPTIONS,
        ])
        unserved = UnservedMethods()
        server.add_generic_rpc_handlers((
            IdentityService(storage, limits).handler(),
            MlsService(storage, groups, welcomes).handler(),
            unserved,
        ))
        try:
            try:
                bound = server.add_insecure_port(f"{host}:{port}")
            except RuntimeError as exc:  # grpc's only word for it: "Failed to bind"
                raise CannotListen(f"devnode cannot listen on {host}:{port}: the address is "
                                   "in use or unusable") from exc
            await server.start()
        except BaseException:
            storage.close()
            raise
        node = cls(server, storage, unserved, host, bound, limiter)
        caps = ""
        if limits is not None and (limits.max_installations or limits.max_updates):
            caps = (f", at most {limits.max_installations or 'any'} installations and "
                    f"{limits.max_updates or 'any'} identity updates per inbox")
        if limiter is not None and rate_limits is not None:
            caps += (f", at most {rate_limits.max_writes or 'any'} writes and "
                     f"{rate_limits.max_reads or 'any'} reads per client per "
                     f"{rate_limits.window_seconds:g}s")
        log.info("devnode serving on %s (db %s%s)", node.url, db, caps)
        return node

    @classmethod
    @asynccontextmanager
    async def start(cls, *, db: str = ":memory:", host: str = "127.0.0.1", port: int = 0,
                    subscriber_capacity: int = DEFAULT_CAPACITY,
                    limits: InboxLimits | None = None,
                    rate_limits: RateLimits | None = None) -> AsyncIterator[DevNode]:
        node = await cls.open(db=db, host=host, port=port,
                              subscriber_capacity=subscriber_capacity, limits=limits,
                              rate_limits=rate_limits)
        try:
            yield node
        finally:
            await node.close()

    async def wait_closed(self) -> None:
        await self._server.wait_for_termination()

    async def close(self, grace: float = 0.5) -> None:
        """Stops accepting calls, ends open streams after ``grace`` seconds, closes the db."""
        await self._server.stop(grace)
        self._storage.close()
        log.info("devnode on port %d stopped", self.port)
