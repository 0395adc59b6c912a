"""Bearer-token authentication for ``/v1``.

Every configured token is compared, each in constant time, so neither the match nor its
position in the list shows in the response time. The OpenAPI document is public.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.api.errors import API_PREFIX, ApiDisabled, Handler, InvalidToken, MissingToken
from gateway.api.keys import API_SETTINGS

PUBLIC_PATHS = frozenset({f"{API_PREFIX}/openapi.json"})


def token_matches(presented: str, tokens: tuple[str, ...]) -> bool:
    given = presented.encode()
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token.encode())
    return found


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX) or request.path in PUBLIC_PATHS:
        return await handler(request)
    tokens = request.app[API_SETTINGS].tokens
    if not tokens:
        raise ApiDisabled("the API is disabled: no api.tokens are configured")
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise MissingToken("an Authorization: Bearer <token> header is required")
    if not token_matches(presented.strip(), tokens):
        raise InvalidToken("the bearer token is not valid")
    return await handler(request)
