"""Every call to a method the devnode does not serve gets ``UNIMPLEMENTED`` in words that
say why, and is remembered (the newest ``_KEPT``), so a test or a developer can see what a
client asked for.

The common case: libxmtp given a ``gateway_host`` speaks XMTP's decentralised API
(``xmtp.xmtpv4.*``: its first call is ``PayerApi/GetNodes``), which the devnode does not
serve; grpc's own answer, "Method not found!", did not say so.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger("gateway.xmtp.devnode")

_KEPT = 100
DECENTRALISED_PREFIX = "/xmtp.xmtpv4."


@dataclass(frozen=True, slots=True)
class UnservedCall:
    method: str  # "/package.Service/Method"
    metadata: tuple[tuple[str, str], ...]  # the request headers, as sent


def refusal(method: str) -> str:
    if method.startswith(DECENTRALISED_PREFIX):
        return (f"the devnode does not serve XMTP's decentralised API ({method}); it serves "
                "the v3 API only: connect without a gateway host")
    return f"the devnode does not serve {method}"


class UnservedMethods:
    """A generic handler (grpc wants its ``service`` method), registered after the
    services: grpc asks it only for methods they do not have."""

    def __init__(self) -> None:
        self.calls: deque[UnservedCall] = deque(maxlen=_KEPT)

    def service(self, handler_call_details: grpc.HandlerCallDetails,
                ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(handler_call_details.method)
        metadata = tuple((str(key), str(value)) for key, value in
                         handler_call_details.invocation_metadata or ())
        self.calls.append(UnservedCall(method, metadata))
        reason = refusal(method)

        async def behavior(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            log.warning("rpc %s not served: %s", method, reason)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, reason)
            raise AssertionError("unreachable: context.abort raises")

        return grpc.unary_unary_rpc_method_handler(behavior)
