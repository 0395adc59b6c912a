"""The API's refusals and the middleware that answers every error under ``/v1`` as JSON
``{"error": message, "code": stable_code}``.

Codes are part of the API: clients branch on them, so they never change once published.
Errors the rest of the gateway raises (``NotFound``, ``ActivePairConflict``,
``WalletNotReachable``...) keep their own codes; only their HTTP status is decided here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import errors

log = logging.getLogger(__name__)

API_PREFIX = "/v1"


class ApiError(errors.GatewayError):
    """A refusal the API itself decides. ``status`` is its HTTP status; ``challenge``,
    when set, goes out as ``WWW-Authenticate`` (RFC 6750: every 401 carries one)."""

    status = 400
    challenge: str | None = None


class MissingToken(ApiError):
    code = "missing_token"
    status = 401
    challenge = "Bearer"


class InvalidToken(ApiError):
    code = "invalid_token"
    status = 401
    challenge = 'Bearer error="invalid_token"'


class ApiDisabled(ApiError):
    code = "api_disabled"
    status = 403


class InvalidParameter(ApiError):
    code = "invalid_parameter"
    status = 400


class InvalidBody(ApiError):
    code = "invalid_body"
    status = 400


class InvalidPageToken(ApiError):
    code = "invalid_page_token"
    status = 400


class ConversationNotFound(ApiError):
    code = "conversation_not_found"
    status = 404


class ParticipantNotFound(ApiError):
    code = "participant_not_found"
    status = 404


class MessageNotFound(ApiError):
    code = "message_not_found"
    status = 404


class UniqueNameTaken(ApiError):
    code = "unique_name_taken"
    status = 409


class ConversationClosed(ApiError):
    code = "conversation_closed"
    status = 409


class InvalidStateTransition(ApiError):
    code = "invalid_state_transition"
    status = 409


class AlreadyParticipant(ApiError):
    code = "participant_exists"
    status = 409


class InvalidAddress(ApiError):
    code = "invalid_address"
    status = 400


class InvalidIdentity(ApiError):
    code = "invalid_identity"
    status = 400


class ProxyNotOurs(ApiError):
    code = "proxy_address_not_ours"
    status = 422


class AddressIsProxy(ApiError):
    code = "address_equals_proxy"
    status = 422


class IdentityIsGateway(ApiError):
    code = "identity_is_gateway"
    status = 422


class AuthorNotParticipant(ApiError):
    code = "author_not_participant"
    status = 422


class EmptyMessage(ApiError):
    code = "empty_message"
    status = 400


# Statuses for errors raised outside the API package, by class (first match wins).
_STATUS_OF: list[tuple[type[errors.GatewayError], int]] = [
    (errors.ActivePairConflict, 409),
    (errors.WalletNotReachable, 422),
    (errors.ChatNetworkError, 502),
    (errors.BadRequest, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.DuplicateMessage, 409),
]

# aiohttp's own answers (unknown route, wrong method, oversized body), given stable codes.
_HTTP_CODES = {404: "route_not_found", 405: "method_not_allowed", 413: "body_too_large"}


def status_of(exc: errors.GatewayError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    for cls, status in _STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except errors.GatewayError as exc:
        status = status_of(exc)
        if status >= 500:
            log.warning("api %s %s failed: %s (%s)", request.method, request.path, exc, exc.code)
            # an internal failure's detail is for the log, not for the caller
            message = str(exc) if status == 502 else "internal error"
        else:
            # The caller sees its own input as given (a phone number included); the
            # log's formatter masks numbers in this line.
            log.info("api %s %s refused: %s (%s)", request.method, request.path, exc,
                     exc.code)
            message = str(exc)
        response = error_response(status, message, exc.code)
        if isinstance(exc, ApiError) and exc.challenge is not None:
            response.headers["WWW-Authenticate"] = exc.challenge
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        response = error_response(exc.status, exc.reason, code)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        # Not swallowed: logged with its traceback, answered as an opaque 500.
        log.exception("api %s %s crashed", request.method, request.path)
        return error_response(500, "internal error", "internal_error")
