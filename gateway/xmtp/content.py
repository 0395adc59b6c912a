"""What a wallet's message says, for content other than plain text: a reaction (its emoji,
added or taken back, and the message it is on), a reply (its text and the message it
answers), and what a referenced message said, quoted for a phone.

Reactions and replies are small: libxmtp's own decoders read them (the uniffi byte copy
that makes them slow for files costs nothing here). Attachments are read from the
EncodedContent by ``gateway.media``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import xmtp_bindings as xb

from gateway.errors import AttachmentInvalid
from gateway.media.attachments import decode_attachment, decode_remote_attachment
from gateway.xmtp.client import XmtpMessage
from gateway.xmtp.library_errors import LIBRARY_ERRORS

REACTION = "reaction"
REPLY = "reply"
_TEXT_TYPES = ("text", "markdown")
_FILE_TYPES = ("attachment", "remoteStaticAttachment", "multiRemoteStaticAttachment")


@dataclass(frozen=True, slots=True)
class Said:
    """What a reaction or a reply says: ``text`` (the emoji; the reply's text, or None
    when it carries something else), the message it refers to, and for a reaction
    whether it was taken back."""

    text: str | None
    reference: str
    removed: bool = False


def content_name(content_type: str) -> str:
    """"xmtp.org/remoteStaticAttachment:1.0" -> "remoteStaticAttachment"."""
    return content_type.partition("/")[2].partition(":")[0] or content_type


def read_reaction(encoded: bytes) -> Said | None:
    """None when ``encoded`` is not a reaction libxmtp reads."""
    with contextlib.suppress(*LIBRARY_ERRORS):
        reaction = xb.decode_reaction(encoded)
        return Said(text=reaction.content or None, reference=reaction.reference,
                    removed=reaction.action == xb.FfiReactionAction.REMOVED)
    return None


def read_reply(encoded: bytes) -> Said | None:
    """None when ``encoded`` is not a reply libxmtp reads; ``text`` None when the reply
    carries something other than text (a file)."""
    with contextlib.suppress(*LIBRARY_ERRORS):
        reply = xb.decode_reply(encoded)
        inner = reply.content
        text = None
        if inner.type_id is not None and inner.type_id.type_id in _TEXT_TYPES \
                and inner.compression is None:
            with contextlib.suppress(UnicodeDecodeError):
                text = bytes(inner.content).decode("utf-8")
        return Said(text=text, reference=reply.reference)
    return None


def quotable(message: XmtpMessage) -> str | None:
    """What a phone is shown of a message a reaction or reply refers to: its text, or the
    name of the file it carried."""
    if message.text is not None:
        return message.text
    kind = content_name(message.content_type)
    if kind in _FILE_TYPES:
        return file_name(kind, message.encoded) or "a file"
    if kind == REPLY:
        said = read_reply(message.encoded)
        return said.text if said is not None else None
    return None


def file_name(kind: str, encoded: bytes) -> str | None:
    """The name an attachment gives its file, if it gives one and can be read."""
    with contextlib.suppress(AttachmentInvalid):
        if kind == "attachment":
            return decode_attachment(encoded).filename
        if kind == "remoteStaticAttachment":
            return decode_remote_attachment(encoded).filename
    return None
