"""How files, reactions and replies read on a phone, and when files go as links: pure
rendering and policy, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.domain.ids import ConversationId, DeliveryId, MessageId, ParticipantId, PhoneNumber
from gateway.domain.models import (
    Channel,
    Consent,
    Conversation,
    ConversationState,
    Delivery,
    DeliveryJob,
    DeliveryState,
    Media,
    Message,
    MessageSource,
    Participant,
    RemoteReference,
)
from gateway.domain.policy import OutboundPolicy, files_as_links
from gateway.domain.rendering import Rendering, file_names, quote, reaction_text, reply_text
from gateway.domain.rules import RuleBook

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HELD = Media("", "image/png", "cat.png", 10, blob_key="wallet/abc")
REMOTE = Media("https://files.example/x", None, "doc.pdf", 99, remote=RemoteReference(
    "00" * 32, b"s" * 32, b"t" * 32, b"n" * 12))


def job(body: str | None, media: tuple[Media, ...] = ()) -> DeliveryJob:
    conversation = Conversation(ConversationId("CH1"), None, None, {}, ConversationState.ACTIVE,
                                None, None, T0, T0, None)
    phone = Participant(ParticipantId("MB1"), conversation.id, Channel.SMS, None,
                        PhoneNumber("+14155550123"), PhoneNumber("+12025550123"),
                        Consent.ALLOWED, {}, T0, None)
    message = Message(MessageId("IM1"), conversation.id, 0, None, body, media, {},
                      MessageSource.XMTP, "x1", T0)
    delivery = Delivery(DeliveryId("DY1"), message.id, phone.id, Channel.SMS,
                        DeliveryState.SENDING, 1, None, None, None, None, T0, T0)
    return DeliveryJob(delivery, message, phone, conversation, None)


class TestQuoting:
    def test_a_short_message_is_quoted_whole_on_one_line(self) -> None:
        assert quote("see you\n at 5") == '"see you at 5"'

    def test_a_long_one_is_cut_with_ascii_dots(self) -> None:
        quoted = quote("shall we meet at five o'clock by the old fountain in the park?")
        assert quoted == '"shall we meet at five o\'clock by the..."' and len(quoted) <= 42

    def test_a_reaction_names_its_emoji_and_what_it_is_on(self) -> None:
        assert reaction_text("👍", "see you at 5") == '👍 to "see you at 5"'
        assert reaction_text("❤️", None) == "❤️ to a message"

    def test_a_reply_quotes_its_original_or_is_its_text(self) -> None:
        assert reply_text("ok", "see you at 5") == 'Re "see you at 5": ok'
        assert reply_text("ok", None) == "ok"


class TestFilesOnAPhone:
    def test_a_wallets_file_without_text_reads_as_its_name(self) -> None:
        rendering = Rendering(RuleBook([], {}))
        assert rendering.for_phone(job(None, (HELD, REMOTE))).text == "cat.png, doc.pdf"
        assert rendering.for_phone(job("look", (HELD,))).text == "look"

    def test_an_api_callers_url_adds_no_name(self) -> None:
        rendering = Rendering(RuleBook([], {}))
        assert rendering.for_phone(job(None, (Media("https://a.example/b.png"),))).text == ""

    def test_names_fall_back_to_the_type(self) -> None:
        assert file_names([Media("", "image/gif"), Media("")]) == "image/gif, a file"

    def test_a_phones_files_are_links_in_the_group_only_when_not_attached(self) -> None:
        rendering = Rendering(RuleBook([], {}))
        phone_job = job("hi", (Media("https://api.twilio.com/m/1", "image/jpeg"),))
        assert rendering.for_wallets(phone_job) == "hi\n[image/jpeg] https://api.twilio.com/m/1"
        assert rendering.for_wallets(phone_job, links=False) == "hi"


class TestLinksOrMms:
    @pytest.mark.parametrize(("phone", "channel", "policy", "why"), [
        ("+14155550123", Channel.SMS, OutboundPolicy(), None),
        ("+16135550123", Channel.SMS, OutboundPolicy(), None),  # Canada
        ("+447700900123", Channel.SMS, OutboundPolicy(), "MMS does not reach that number"),
        ("+447700900123", Channel.WHATSAPP, OutboundPolicy(), None),  # WhatsApp's own media
        ("+14155550123", Channel.SMS, OutboundPolicy(sms_only=True),
         "this number sends files as links"),
        ("+14155550123", Channel.WHATSAPP, OutboundPolicy(sms_only=True), None),
    ])
    def test_files_go_as_links_outside_the_us_and_canada_or_when_the_rule_says(
            self, phone: str, channel: Channel, policy: OutboundPolicy, why: str | None) -> None:
        assert files_as_links(policy, channel, phone) == why
