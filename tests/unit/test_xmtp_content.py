"""Reading a wallet's reactions and replies, and what a referenced message said, from
EncodedContent as libxmtp encodes it."""

from __future__ import annotations

import xmtp_bindings as xb

from gateway.media.attachments import (
    Attachment,
    RemoteAttachment,
    encode_attachment,
    encode_remote_attachment,
)
from gateway.xmtp.client import XmtpMessage
from gateway.xmtp.content import Said, quotable, read_reaction, read_reply


def reaction(emoji: str, action: xb.FfiReactionAction) -> bytes:
    return bytes(xb.encode_reaction(xb.FfiReactionPayload(
        reference="ab" * 32, reference_inbox_id="inbox", action=action, content=emoji,
        schema=xb.FfiReactionSchema.UNICODE)))


def reply(inner_type: str, content: bytes) -> bytes:
    return bytes(xb.encode_reply(xb.FfiReply(
        reference="cd" * 32, reference_inbox_id=None, content=xb.FfiEncodedContent(
            type_id=xb.FfiContentTypeId(authority_id="xmtp.org", type_id=inner_type,
                                        version_major=1, version_minor=0),
            parameters={}, fallback=None, compression=None, content=content))))


def message(content_type: str, encoded: bytes, text: str | None = None) -> XmtpMessage:
    return XmtpMessage(id="ef" * 32, conversation_id="01" * 16, sender_inbox_id="x",
                       sent_at_ns=1, content_type=content_type, text=text,
                       is_membership_change=False, encoded=encoded)


class TestReactions:
    def test_an_added_reaction_is_its_emoji_on_its_message(self) -> None:
        assert read_reaction(reaction("👍", xb.FfiReactionAction.ADDED)) == Said(
            "👍", "ab" * 32, removed=False)

    def test_a_removed_one_says_so(self) -> None:
        said = read_reaction(reaction("👍", xb.FfiReactionAction.REMOVED))
        assert said is not None and said.removed

    def test_what_is_not_a_reaction_is_none(self) -> None:
        assert read_reaction(b"\x01\x02garbage") is None


class TestReplies:
    def test_a_text_reply_is_its_text_on_its_original(self) -> None:
        assert read_reply(reply("text", b"yes, 5")) == Said("yes, 5", "cd" * 32)

    def test_a_reply_carrying_something_else_has_no_text(self) -> None:
        said = read_reply(reply("attachment", b"\x00\x01"))
        assert said is not None and said.text is None

    def test_what_is_not_a_reply_is_none(self) -> None:
        assert read_reply(b"\x01\x02garbage") is None


class TestQuotable:
    def test_a_text_is_its_text(self) -> None:
        assert quotable(message("xmtp.org/text:1.0", b"", text="hello")) == "hello"

    def test_a_file_is_its_name(self) -> None:
        inline = encode_attachment(Attachment("cat.png", "image/png", b"\x89PNG"))
        assert quotable(message("xmtp.org/attachment:1.0", inline)) == "cat.png"
        remote = encode_remote_attachment(RemoteAttachment(
            url="https://f.example/x", content_digest="00" * 32, secret=b"s" * 32,
            salt=b"t" * 32, nonce=b"n" * 12, filename="doc.pdf"))
        assert quotable(message("xmtp.org/remoteStaticAttachment:1.0", remote)) == "doc.pdf"
        assert quotable(message("xmtp.org/attachment:1.0", b"\x01")) == "a file"

    def test_a_reply_is_its_own_text_and_anything_else_nothing(self) -> None:
        assert quotable(message("xmtp.org/reply:1.0", reply("text", b"sure"))) == "sure"
        assert quotable(message("xmtp.org/reaction:1.0",
                                reaction("👍", xb.FfiReactionAction.ADDED))) is None
