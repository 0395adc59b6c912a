"""How the devnode's methods become gRPC handlers: decoding, errors, one log line per call.

Requests are decoded here rather than by grpc so that bytes that are not the expected
protobuf get ``INVALID_ARGUMENT`` like any other malformed input, instead of grpc's
generic ``INTERNAL``. Service code raises ``BadRequest`` for input it cannot accept, and
``Refused`` for valid input the node declines (a cap reached) with the status code and
words XMTP's node uses for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from gateway.errors import BadRequest

log = logging.getLogger("gateway.xmtp.devnode")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Refused(BadRequest):
    """Well-formed input the node declines, answered with ``status`` and this message."""

    code = "devnode_refused"

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        self.status = status
        super().__init__(message)


class _ProtoMessage(Protocol):
    def SerializeToString(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Undecodable:
    error: str


def _decoder(request_type: Any) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return request_type.FromString(data)
        except DecodeError as exc:
            return _Undecodable(str(exc) or "not a valid protobuf message")
    return decode


def _encode(message: _ProtoMessage) -> bytes:
    return message.SerializeToString()


async def _reject(context: grpc.aio.ServicerContext[Any, Any], method: str,
                  exc: BadRequest) -> None:
    status = exc.status if isinstance(exc, Refused) else grpc.StatusCode.INVALID_ARGUMENT
    log.warning("rpc %s rejected (%s): %s", method, status.name, exc)
    await context.abort(status, str(exc))


def unary(method: str, request_type: Any,
          impl: Callable[[Any], Awaitable[_ProtoMessage]]) -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        try:
            if isinstance(request, _Undecodable):
                raise BadRequest(f"undecodable request: {request.error}")
            return await impl(request)
        except BadRequest as exc:
            outcome = "invalid"
            await _reject(context, method, exc)
        except Exception:
            outcome = "error"
            log.exception("rpc %s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the devnode")
        finally:
            log.debug("rpc %s %s %.2fms", method, outcome,
                      (time.perf_counter() - started) * 1000)
        raise AssertionError("unreachable: context.abort raises")

    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=_decoder(request_type), response_serializer=_encode)


def server_stream(
    method: str, request_type: Any,
    impl: Callable[[Any], AsyncIterator[_ProtoMessage]],
) -> grpc.RpcMethodHandler[Any, Any]:
    async def behavior(request: Any,
                       context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        # libxmtp waits for the response headers before it treats a stream as open;
        # without them its stream never delivers.
        await context.send_initial_metadata(())
        started = time.perf_counter()
        sent = 0
        outcome = "closed"
        log.debug("rpc %s opened", method)
        try:
            if isinstance(request, _Undecodable):
                raise BadRequest(f"undecodable request: {request.error}")
            async for item in impl(request):
                yield item
                sent += 1
        except BadRequest as exc:
            outcome = "invalid"
            await _reject(context, method, exc)
        except Exception:
            outcome = "error"
            log.exception("rpc %s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the devnode")
        finally:
            log.debug("rpc %s %s after %d items, %.1fs", method, outcome, sent,
                      time.perf_counter() - started)

    return grpc.unary_stream_rpc_method_handler(
        behavior, request_deserializer=_decoder(request_type), response_serializer=_encode)
