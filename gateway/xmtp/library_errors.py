"""libxmtp's exceptions, translated into the gateway's error tree at this edge.

Most become ``ChatNetworkError`` with libxmtp's first line. A few are facts an operator
must act on and get their own class and words: the inbox's installation cap (libxmtp
refuses an 11th installation itself, and a node may refuse it too, in the same words),
the inbox's lifetime cap (XMTP's node: "inbox log is full"), and a ``gateway_host`` that
does not serve XMTP's decentralised API.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import xmtp_bindings as xb

from gateway.errors import (
    ChatNetworkError,
    InboxLogFull,
    InstallationLimitReached,
    XmtpGatewayUnavailable,
    first_line,
)

LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    xb.FfiError, xb.InternalError, xb.IdentityValidationError, xb.SigningError,
    xb.FfiCryptoError,
)

# libxmtp's IdentityError::TooManyInstallations
_TOO_MANY = re.compile(r"InboxID (?P<inbox>[0-9a-fA-F]+) has already registered "
                       r"(?P<count>\d+)/(?P<limit>\d+) installations")
_LOG_FULL = "inbox log is full"  # xmtp-node-go, for an inbox's 257th identity update
# what libxmtp's decentralised client calls first, and its own name for that call
_DECENTRALISED_MARKS = ("/xmtp.xmtpv4.", '"get_nodes"')
_NOT_SERVED_MARKS = ("not implemented", "method not found", "does not serve")

NOT_A_GATEWAY = ("it does not serve XMTP's decentralised API (its first call, "
                 "PayerApi/GetNodes, was answered 'not implemented'): point it at an XMTP "
                 "Gateway Service, or leave it empty to use XMTP's v3 nodes (xmtp.node_url)")


def translate(action: str, exc: BaseException, *, gateway_host: str | None = None,
              inbox_id: str | None = None) -> ChatNetworkError:
    text = str(exc)
    too_many = _TOO_MANY.search(text)
    if too_many:
        return InstallationLimitReached(too_many["inbox"], int(too_many["count"]),
                                        int(too_many["limit"]))
    if _LOG_FULL in text:
        return InboxLogFull(inbox_id)
    if gateway_host is not None and any(mark in text for mark in _DECENTRALISED_MARKS):
        if any(mark in text.lower() for mark in _NOT_SERVED_MARKS):
            return XmtpGatewayUnavailable(gateway_host, NOT_A_GATEWAY)
        return XmtpGatewayUnavailable(gateway_host, f"{action}: {first_line(exc)}")
    return ChatNetworkError(f"{action}: {first_line(exc)}")


@contextlib.contextmanager
def library_errors(action: str, *, gateway_host: str | None = None,
                   inbox_id: str | None = None) -> Iterator[None]:
    """Raises libxmtp's exceptions inside as the gateway's (see ``translate``)."""
    try:
        yield
    except LIBRARY_ERRORS as exc:
        raise translate(action, exc, gateway_host=gateway_host, inbox_id=inbox_id) from exc
