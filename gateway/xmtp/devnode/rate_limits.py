"""The devnode's rate limits, off unless asked for: XMTP's per-client write and read
limits, scaled down by flags so tests and benchmarks meet them in seconds.

XMTP's network limits each client, per rolling five minutes, to 3,000 writes and 20,000
reads. xmtp-node-go's limiter (its ``RateLimitInterceptor``) counts as writes
``PublishIdentityUpdate``, ``UploadKeyPackage``, ``RegisterInstallation``, and
``SendWelcomeMessages`` and ``SendGroupMessages`` at one per message in the request;
everything else, a subscription included, is one read. Above a limit it answers
``RESOURCE_EXHAUSTED`` "<cost> exceeds rate limit <bucket>" (the bucket: ``R``, the
client, then ``PUB`` for writes or ``DEF`` for reads), and a refused request uses
nothing. The devnode does the same, in a rolling window as XMTP documents its limits.

libxmtp treats that status as retryable: it tries a write again five times in about
2.5 s (50 ms, tripled each time), then gives up with its generic
"[GroupError::SyncFailedToWait] …" and logs the status at ERROR level; the prepared
message stays unpublished, and publishing it again later sends it once.

"A client" is what XMTP's node keys on: the request's ``x-forwarded-for`` when it has
one, else the caller's IP address. On loopback every client shares 127.0.0.1, so by
default the devnode keys on the connection (address and port): each libxmtp API client
has its own. ``per_address`` keys on the address alone, as the network does: then every
client of one host (several gateway identities, a test's wallets) shares one budget.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

log = logging.getLogger("gateway.xmtp.devnode")

WRITE_METHODS = frozenset({"PublishIdentityUpdate", "UploadKeyPackage",
                           "RegisterInstallation", "SendWelcomeMessages",
                           "SendGroupMessages"})
WRITE, READ = "PUB", "DEF"  # xmtp-node-go's names for the two limits

# XMTP's network, per client and rolling window
XMTP_MAX_WRITES = 3000
XMTP_MAX_READS = 20000
XMTP_RATE_WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per client per rolling ``window_seconds``; None: no limit (the default)."""

    max_writes: int | None = None
    max_reads: int | None = None
    window_seconds: float = XMTP_RATE_WINDOW
    per_address: bool = False  # a client is its IP address (the network's key), not its connection

    @classmethod
    def xmtp(cls) -> RateLimits:
        return cls(XMTP_MAX_WRITES, XMTP_MAX_READS, XMTP_RATE_WINDOW)

    @property
    def enforced(self) -> bool:
        return self.max_writes is not None or self.max_reads is not None

    def limit(self, kind: str) -> int | None:
        return self.max_writes if kind == WRITE else self.max_reads


def cost_of(method: str, request: Any) -> tuple[str, int]:
    """Which limit a request counts against, and how much of it it uses."""
    if method in WRITE_METHODS:
        messages = getattr(request, "messages", None)
        if method in ("SendWelcomeMessages", "SendGroupMessages") and messages is not None:
            return WRITE, max(len(messages), 1)
        return WRITE, 1
    return READ, 1


@dataclass
class _Window:
    spent: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    total: int = 0

    def used(self, now: float, window: float) -> int:
        while self.spent and self.spent[0][0] <= now - window:
            self.total -= self.spent.popleft()[1]
        return self.total

    def spend(self, now: float, cost: int) -> None:
        self.spent.append((now, cost))
        self.total += cost


class RateLimiter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every unary call and stream opening per client and refuses, as XMTP's node
    does, what would take a client past a limit. ``refused`` and ``counted`` (per limit,
    over the node's life) are for tests and benchmarks."""

    def __init__(self, limits: RateLimits, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._now = now
        self._windows: dict[tuple[str, str], _Window] = collections.defaultdict(_Window)
        self.refused: collections.Counter[str] = collections.Counter()
        self.counted: collections.Counter[str] = collections.Counter()

    def check(self, client: str, method: str, request: Any) -> str | None:
        """Spends the request's cost; returns the refusal instead when over a limit."""
        kind, cost = cost_of(method, request)
        limit = self._limits.limit(kind)
        window = self._windows[(client, kind)]
        now = self._now()
        if limit is not None and window.used(now, self._limits.window_seconds) + cost > limit:
            self.refused[kind] += 1
            return f"{cost} exceeds rate limit R{client}{kind}"
        window.spend(now, cost)
        self.counted[kind] += cost
        return None

    def client_of(self, peer: str, forwarded: str | None) -> str:
        """The key a request's limits are counted under: the first ``x-forwarded-for``
        address, else the caller (gRPC's ``ipv4:127.0.0.1:43168``), without its port when
        ``per_address``."""
        if forwarded:
            return forwarded.split(",")[0].strip()
        if self._limits.per_address and peer.count(":") >= 2:
            return peer.rsplit(":", 1)[0]
        return peer

    def used(self, client: str, kind: str) -> int:
        """What ``client`` has used of a limit in the window that ends now."""
        return self._windows[(client, kind)].used(self._now(), self._limits.window_seconds)

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = str(details.method).rsplit("/", 1)[-1]
        forwarded = next((str(value) for key, value in details.invocation_metadata or ()
                          if key == "x-forwarded-for"), None)
        if handler.unary_unary is not None:
            return self._unary(handler, method, forwarded)
        if handler.unary_stream is not None:
            return self._stream(handler, method, forwarded)
        return handler

    def _refusal(self, context: grpc.aio.ServicerContext[Any, Any], method: str,
                 forwarded: str | None, request: Any) -> str | None:
        refusal = self.check(self.client_of(str(context.peer()), forwarded), method, request)
        if refusal is not None:
            log.info("rpc %s rate limited: %s", method, refusal)
        return refusal

    def _unary(self, handler: grpc.RpcMethodHandler[Any, Any], method: str,
               forwarded: str | None) -> grpc.RpcMethodHandler[Any, Any]:
        inner = handler.unary_unary

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            refusal = self._refusal(context, method, forwarded, request)
            if refusal is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    def _stream(self, handler: grpc.RpcMethodHandler[Any, Any], method: str,
                forwarded: str | None) -> grpc.RpcMethodHandler[Any, Any]:
        inner = handler.unary_stream

        async def behavior(request: Any,
                           context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            refusal = self._refusal(context, method, forwarded, request)
            if refusal is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            async for item in inner(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            behavior, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
