"""libxmtp's API client alone: connecting (to a v3 node, or to XMTP's decentralised
network through an XMTP Gateway Service), and what can be done with it and no client of
the inbox: finding an inbox, reading its installations, revoking them. These work when no
client can be built (an inbox at its installation cap, a lost database)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xmtp_bindings as xb
from eth_account import Account
from eth_account.messages import encode_defunct

from gateway.xmtp.inbox_state import InboxState, state_from_ffi
from gateway.xmtp.library_errors import library_errors


def ethereum_identifier(address: str) -> Any:
    return xb.FfiIdentifier(identifier=address.lower(),
                            identifier_kind=xb.FfiIdentifierKind.ETHEREUM)


# A credential set once and kept: libxmtp uses a handle's credential until it is replaced.
_NEVER_EXPIRES = 2**62


@dataclass(frozen=True, slots=True)
class GatewayAccess:
    """XMTP's decentralised network, reached through an XMTP Gateway Service at ``host``
    (which pays for writes with its payer key). ``auth_token`` is sent on its requests
    in the ``auth_header`` header (libxmtp's default: ``authorization``)."""

    host: str
    auth_token: str | None = None
    auth_header: str | None = None

    def __repr__(self) -> str:  # never the token
        return f"GatewayAccess(host={self.host!r})"


async def connect_api(node_url: str, *, is_secure: bool = False,
                      gateway: GatewayAccess | None = None) -> Any:
    """libxmtp's API client: XMTP's v3 node at ``node_url``, or, given ``gateway``, the
    decentralised network (libxmtp then does not use ``node_url``). Nothing is sent yet:
    libxmtp connects on the first call."""
    gateway_host = gateway.host if gateway is not None else None
    with library_errors("connect to XMTP", gateway_host=gateway_host):
        if gateway is None:
            return await xb.connect_to_backend(node_url, None, is_secure, None, None, None,
                                               None)
        handle = None
        if gateway.auth_token is not None:
            handle = xb.FfiAuthHandle()  # type: ignore[no-untyped-call]
            await handle.set(xb.FfiCredential(name=gateway.auth_header,
                                              value=gateway.auth_token,
                                              expires_at_seconds=_NEVER_EXPIRES))
        # The pinned libxmtp uses one TLS setting for the gateway and the nodes it names.
        return await xb.connect_to_backend(node_url, gateway.host,
                                           gateway.host.startswith("https:"), None, None,
                                           None, handle)


async def inbox_id_for(api: Any, address: str) -> str | None:
    """The inbox of a wallet address, or None if it has none."""
    with library_errors("find inbox"):
        found: str | None = await xb.get_inbox_id_for_identifier(api, ethereum_identifier(address))
    return found


async def revoke_installations(api: Any, private_key: str | bytes, inbox_id: str,
                               installation_ids: Sequence[str]) -> None:
    """Revokes installations of ``inbox_id`` (one identity update), signed by the wallet
    of ``private_key``, which must be the inbox's recovery wallet. Needs only the API
    client: it works when no client of the inbox can be built (at its installation cap,
    or with its database lost)."""
    account = Account.from_key(private_key)
    with library_errors("revoke installations", inbox_id=inbox_id):
        request = xb.revoke_installations(
            api, ethereum_identifier(account.address), inbox_id,
            [bytes.fromhex(i) for i in installation_ids])
        text = await request.signature_text()
        signature = account.sign_message(encode_defunct(text=text)).signature
        await request.add_ecdsa_signature(bytes(signature))
        await xb.apply_signature_request(api, request)


async def inbox_state_of(api: Any, inbox_id: str) -> InboxState:
    """An inbox's active installations, from the network, with the API client alone
    (identity updates not counted: that takes a client, see ``XmtpClient.observer``)."""
    with library_errors("read inbox state", inbox_id=inbox_id):
        [state] = await xb.inbox_state_from_inbox_ids(api, [inbox_id])
    return state_from_ffi(state)
