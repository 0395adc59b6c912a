"""``xmtp.identity.api.v1.IdentityApi``: an append-only log of identity updates per inbox,
plus the identifier -> inbox map that ``GetInboxIds`` answers from.

Signatures are not checked here: every client verifies an inbox's whole log itself
before trusting it, as it does against the real network.
"""

from __future__ import annotations

import grpc

from gateway.errors import BadRequest
from gateway.xmtp.devnode import rpc
from gateway.xmtp.devnode.proto_gen import identity_api_pb2 as api
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc
from gateway.xmtp.devnode.storage import DevNodeStorage

SERVICE = "xmtp.identity.api.v1.IdentityApi"

ETHEREUM = assoc.IDENTIFIER_KIND_ETHEREUM


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
    def __init__(self, storage: DevNodeStorage) -> None:
        self._storage = storage

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
        self._storage.add_identity_update(
            update.inbox_id, update.SerializeToString(),
            associate=associate, dissociate=dissociate)
        return api.PublishIdentityUpdateResponse()

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
