"""Rows to domain objects and message content to and from its sealed form."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from gateway.domain.ids import (
    ConversationId,
    DeliveryId,
    MessageId,
    ParticipantId,
    PhoneNumber,
    WalletAddress,
)
from gateway.domain.models import (
    Channel,
    Consent,
    Contact,
    Conversation,
    ConversationState,
    Delivery,
    DeliveryState,
    Event,
    Lease,
    Media,
    Message,
    MessageSource,
    Participant,
    RemoteReference,
)
from gateway.store.crypto import ContentCipher


def conversation(row: Mapping[Any, Any]) -> Conversation:
    return Conversation(
        id=ConversationId(row["id"]),
        unique_name=row["unique_name"],
        friendly_name=row["friendly_name"],
        attributes=row["attributes"],
        state=ConversationState(row["state"]),
        rule=row["rule"],
        xmtp_group_id=row["xmtp_group_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_message_at=row["last_message_at"],
    )


def participant(row: Mapping[Any, Any]) -> Participant:
    return Participant(
        id=ParticipantId(row["id"]),
        conversation_id=ConversationId(row["conversation_id"]),
        channel=Channel(row["channel"]),
        identity=WalletAddress(row["identity"]) if row["identity"] is not None else None,
        address=PhoneNumber(row["address"]) if row["address"] is not None else None,
        proxy_address=(PhoneNumber(row["proxy_address"])
                       if row["proxy_address"] is not None else None),
        consent=Consent(row["consent"]),
        attributes=row["attributes"],
        joined_at=row["joined_at"],
        left_at=row["left_at"],
    )


def delivery(row: Mapping[Any, Any]) -> Delivery:
    return Delivery(
        id=DeliveryId(row["id"]),
        message_id=MessageId(row["message_id"]),
        participant_id=ParticipantId(row["participant_id"]),
        channel=Channel(row["channel"]),
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        provider_id=row["provider_id"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        lease=(Lease(holder=row["holder"], token=row["lease_token"], until=row["lease_until"])
               if row["holder"] is not None and row["lease_until"] is not None else None),
    )


def contact(row: Mapping[Any, Any]) -> Contact:
    return Contact(
        address=PhoneNumber(row["address"]),
        proxy_address=PhoneNumber(row["proxy_address"]),
        consent=Consent(row["consent"]),
        first_inbound_at=row["first_inbound_at"],
        last_inbound_at=row["last_inbound_at"],
        channel=Channel(row["channel"]),
    )


def event(row: Mapping[Any, Any]) -> Event:
    conversation_id = row["conversation_id"]
    return Event(
        id=row["id"],
        type=row["type"],
        conversation_id=ConversationId(conversation_id) if conversation_id else None,
        data=row["data"],
        created_at=row["created_at"],
    )


def media_wire(m: Media) -> dict[str, Any]:
    """A file of a message as JSON (sealed with the body). Keys beyond url and
    content_type only when set, so rows written before them read the same."""
    wire: dict[str, Any] = {"url": m.url, "content_type": m.content_type}
    for name in ("filename", "size", "blob_key"):
        if getattr(m, name) is not None:
            wire[name] = getattr(m, name)
    if m.remote is not None:
        wire["remote"] = {"digest": m.remote.content_digest, "scheme": m.remote.scheme,
                          **{part: base64.b64encode(getattr(m.remote, part)).decode()
                             for part in ("secret", "salt", "nonce")}}
    return wire


def media_from_wire(wire: Mapping[str, Any]) -> Media:
    remote = wire.get("remote")
    return Media(
        url=wire["url"], content_type=wire["content_type"], filename=wire.get("filename"),
        size=wire.get("size"), blob_key=wire.get("blob_key"),
        remote=RemoteReference(
            content_digest=remote["digest"], scheme=remote["scheme"],
            secret=base64.b64decode(remote["secret"]), salt=base64.b64decode(remote["salt"]),
            nonce=base64.b64decode(remote["nonce"])) if remote else None)


def seal_content(cipher: ContentCipher, body: str | None,
                 media: tuple[Media, ...]) -> dict[str, Any]:
    """The message columns that hold its content: body and media (URLs can carry account
    and media ids) sealed under the active key, which the row names."""
    sealed: dict[str, Any] = {"key_id": None, "body_ciphertext": None, "media_ciphertext": None}
    if body is not None:
        sealed["body_ciphertext"] = cipher.seal(body.encode())
    if media:
        wire = [media_wire(m) for m in media]
        sealed["media_ciphertext"] = cipher.seal(json.dumps(wire).encode())
    if body is not None or media:
        sealed["key_id"] = cipher.active_key
    return sealed


def message(row: Mapping[Any, Any], cipher: ContentCipher) -> Message:
    key_id = row["key_id"]
    body: str | None = None
    media: tuple[Media, ...] = ()
    if row["body_ciphertext"] is not None:
        body = cipher.open(key_id, row["body_ciphertext"]).decode()
    if row["media_ciphertext"] is not None:
        wire = json.loads(cipher.open(key_id, row["media_ciphertext"]))
        media = tuple(media_from_wire(m) for m in wire)
    author = row["author_id"]
    return Message(
        id=MessageId(row["id"]),
        conversation_id=ConversationId(row["conversation_id"]),
        index=row["index"],
        author=ParticipantId(author) if author is not None else None,
        body=body,
        media=media,
        attributes=row["attributes"],
        source=MessageSource(row["source"]),
        external_id=row["external_id"],
        created_at=row["created_at"],
    )
