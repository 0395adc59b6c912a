"""``xmtp.identity.api.v1.IdentityApi``: an append-only log of identity updates per inbox,
plus the identifier -> inbox map that ``GetInboxIds`` answers from.

Signatures are not checked here: every client verifies an inbox's whole log itself
before trusting it, as it does against the real network.

``InboxLimits`` turns on the caps of XMTP's network (off by default, so tests and demos
may register as many installations as they like): an inbox's log holds at most 256
updates (xmtp-node-go refuses the 257th with "inbox log is full"), and an inbox has at
most 10 active installations (libxmtp refuses an 11th before publishing; the node
refuses it too, in libxmtp's words, for a client that raced or skipped that check).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from gateway.errors import BadRequest
from gateway.xmtp.devnode import rpc
from gateway.xmtp.devnode.proto_gen import identity_api_pb2 as api
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc
from gateway.xmtp.devnode.storage import DevNodeStorage

SERVICE = "xmtp.identity.api.v1.IdentityApi"

ETHEREUM = assoc.IDENTIFIER_KIND_ETHEREUM

# XMTP's network: installations an inbox may have at once, updates its log may hold
XMTP_MAX_INSTALLATIONS = 10
XMTP_MAX_INBOX_UPDATES = 256


@dataclass(frozen=True, slots=True)
class InboxLimits:
    """Caps the devnode enforces; None: no cap (the default)."""

    max_installations: int | None = None
    max_updates: int | None = None

    @classmethod
    def xmtp(cls) -> InboxLimits:
        return cls(XMTP_MAX_INSTALLATIONS, XMTP_MAX_INBOX_UPDATES)


def installation_changes(update: assoc.IdentityUpdate) -> tuple[list[bytes], list[bytes]]:
    """The installation keys an update adds and those it revokes.

    Revoking a wallet also revokes, on the network, the installations that wallet added;
    the devnode does not follow that (it would need the signers) and counts only
    installations revoked by key, which is how libxmtp revokes them."""
    added: list[bytes] = []
    revoked: list[bytes] = []
    for action in update.actions:
        kind = action.WhichOneof("kind")
        if kind == "add":
            member = action.add.new_member_identifier
            if member.WhichOneof("kind") == "installation_public_key":
                added.append(member.installation_public_key)
        elif kind == "revoke":
            member = action.revoke.member_to_revoke
            if member.WhichOneof("kind") == "installation_public_key":
                revoked.append(member.installation_public_key)
    return added, revoked


def active_installations(updates: Iterable[assoc.IdentityUpdate]) -> set[bytes]:
    """The installation keys an inbox's log leaves active, replayed in order."""
    active: set[bytes] = set()
    for update in updates:
        added, revoked = installation_changes(update)
        active.update(added)
        active.difference_update(revoked)
    return active


def normalize_identifier(kind: int, identifier: str) -> tuple[int, str]:
    """Unspecified kind means Ethereum (older clients); addresses compare case-insensitively."""
    if kind in (assoc.IDENTIFIER_KIND_UNSPECIFIED, ETHEREUM):
        return ETHEREUM, identifier.strip().lower()
    return kind, identifier


def _check_inbox_id(inbox_id: str) -> None:
    if not inbox_id:
        raise BadRequest("identity_update.inbox_id is empty")
    try:
        bytes.fromhex(inbox_id)
    except ValueError:
        raise BadRequest(f"inbox id {inbox_id[:80]!r} is not hex") from None


class IdentityService:
    def __init__(self, storage: DevNodeStorage, limits: InboxLimits | None = None) -> None:
        self._storage = storage
        self._limits = limits or InboxLimits()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "PublishIdentityUpdate": rpc.unary(
                "PublishIdentityUpdate", api.PublishIdentityUpdateRequest,
                self.publish_identity_update),
            "GetIdentityUpdates": rpc.unary(
                "GetIdentityUpdates", api.GetIdentityUpdatesRequest, self.get_identity_updates),
            "GetInboxIds": rpc.unary("GetInboxIds", api.GetInboxIdsRequest, self.get_inbox_ids),
        })

    async def publish_identity_update(
        self, request: api.PublishIdentityUpdateRequest,
    ) -> api.PublishIdentityUpdateResponse:
        update = request.identity_update
        _check_inbox_id(update.inbox_id)
        if not update.actions:
            raise BadRequest("identity update has no actions")
        associate: list[tuple[int, str]] = []
        dissociate: list[tuple[int, str]] = []
        creates = False
        for action in update.actions:
            kind = action.WhichOneof("kind")
            if kind == "create_inbox":
                creates = True
                create = action.create_inbox
                if not create.initial_identifier:
                    raise BadRequest("create_inbox.initial_identifier is empty")
                associate.append(normalize_identifier(
                    create.initial_identifier_kind, create.initial_identifier))
            elif kind == "add":
                member = action.add.new_member_identifier
                if member.WhichOneof("kind") == "ethereum_address":
                    associate.append(normalize_identifier(ETHEREUM, member.ethereum_address))
            elif kind == "revoke":
                member = action.revoke.member_to_revoke
                if member.WhichOneof("kind") == "ethereum_address":
                    dissociate.append(normalize_identifier(ETHEREUM, member.ethereum_address))
        if not creates and not self._storage.inbox_exists(update.inbox_id):
            raise BadRequest(f"unknown inbox {update.inbox_id}: its first update must create it")
        self._check_limits(update)
        self._storage.add_identity_update(
            update.inbox_id, update.SerializeToString(),
            associate=associate, dissociate=dissociate)
        return api.PublishIdentityUpdateResponse()

    def _check_limits(self, update: assoc.IdentityUpdate) -> None:
        limits = self._limits
        if limits.max_installations is None and limits.max_updates is None:
            return
        rows = self._storage.identity_updates(update.inbox_id, 0)
        if limits.max_updates is not None and len(rows) >= limits.max_updates:
            if any(row.payload == update.SerializeToString() for row in rows):
                return  # a retry of a stored update is answered as before, not refused
            raise rpc.Refused(grpc.StatusCode.UNKNOWN, "inbox log is full")
        added, _ = installation_changes(update)
        if limits.max_installations is None or not added:
            return
        logged = [assoc.IdentityUpdate.FromString(row.payload) for row in rows]
        before = active_installations(logged)
        after = active_installations([*logged, update])
        if len(after) > limits.max_installations and len(after) > len(before):
            raise rpc.Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Cannot register a new installation because the InboxID {update.inbox_id}"
                f" has already registered {len(before)}/{limits.max_installations}"
                " installations. Please revoke existing installations first.")

    async def get_identity_updates(
        self, request: api.GetIdentityUpdatesRequest,
    ) -> api.GetIdentityUpdatesResponse:
        response = api.GetIdentityUpdatesResponse()
        for wanted in request.requests:
            per_inbox = response.responses.add(inbox_id=wanted.inbox_id)
            for row in self._storage.identity_updates(wanted.inbox_id, wanted.sequence_id):
                log_entry = per_inbox.updates.add(
                    sequence_id=row.sequence_id, server_timestamp_ns=row.server_ns)
                log_entry.update.ParseFromString(row.payload)
        return response

    async def get_inbox_ids(self, request: api.GetInboxIdsRequest) -> api.GetInboxIdsResponse:
        response = api.GetInboxIdsResponse()
        for wanted in request.requests:
            answer = response.responses.add(
                identifier=wanted.identifier, identifier_kind=wanted.identifier_kind)
            inbox_id = self._storage.inbox_id_of(
                *normalize_identifier(wanted.identifier_kind, wanted.identifier))
            if inbox_id is not None:
                answer.inbox_id = inbox_id
        return response
