"""How a message reads on the other side: a wallet's text on a phone (behind the rule's
sender label), a phone's text in the group, and the group's name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers

from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel, DeliveryJob, Media, MessageSource
from gateway.domain.rules import RuleBook


@dataclass(frozen=True, slots=True)
class ForPhone:
    """A text for a phone: ``label`` (who wrote it, or "") goes before ``body`` on the
    first message only, however many messages the body takes."""

    label: str
    body: str

    @property
    def text(self) -> str:
        return self.label + self.body


class Rendering:
    def __init__(self, rules: RuleBook) -> None:
        self._rules = rules

    def for_phone(self, job: DeliveryJob) -> ForPhone:
        """System notices as they are; a wallet's text behind the governing rule's sender
        label (see ``RuleBook.governing``). A wallet's file without text reads as its
        name, so the phone sees who sent what (and a lookup has a body to find)."""
        body = job.message.body or ""
        held = [m for m in job.message.media if m.held]
        if not body.strip() and held:
            body = file_names(held)
        if job.message.source is MessageSource.SYSTEM or job.author is None:
            return ForPhone("", body)
        if job.author.identity is None:
            return ForPhone("", body)
        rule = self._rules.governing(job.target.proxy_address, job.target.channel,
                                     job.conversation.rule)
        if rule is None or not rule.sender_label:
            return ForPhone("", body)
        return ForPhone(self._rules.sender_label(rule, job.author.identity), body)

    def for_wallets(self, job: DeliveryJob, *, links: bool = True) -> str:
        """The text posted into the group: a phone's body, with its media as links unless
        they go as attachments of their own (``links=False``)."""
        parts = [job.message.body] if job.message.body else []
        if links:
            parts += [f"[{m.content_type or 'media'}] {m.url}" for m in job.message.media]
        return "\n".join(parts)


QUOTE_CHARS = 40


def quote(text: str) -> str:
    """The start of a message, on one line, quoted: '"see you at 5"', '"a long one..."'.
    Plain ASCII around it, so an SMS stays in its 160-character alphabet when it can."""
    line = " ".join(text.split())
    if len(line) > QUOTE_CHARS:
        line = line[:QUOTE_CHARS - 3].rstrip() + "..."
    return f'"{line}"'


def reaction_text(emoji: str, quoted: str | None) -> str:
    """A wallet's reaction as a phone reads it: '👍 to "see you at 5"'."""
    return f"{emoji} to {quote(quoted)}" if quoted else f"{emoji} to a message"


def reply_text(text: str, quoted: str | None) -> str:
    """A wallet's reply as a phone reads it: 'Re "see you at 5": ok, 5 it is'."""
    return f"Re {quote(quoted)}: {text}" if quoted else text


def file_names(media: Sequence[Media]) -> str:
    return ", ".join(m.filename or m.content_type or "a file" for m in media)


def group_name(channel: Channel, phone: PhoneNumber, proxy: PhoneNumber) -> str:
    """"SMS · +1 555-012-3456 → +1 555-010-0001": the phone, and the gateway number it
    texts, so a wallet in conversations with one phone on two numbers tells them apart."""
    label = "WhatsApp" if channel is Channel.WHATSAPP else "SMS"
    return f"{label} · {pretty(phone)} → {pretty(proxy)}"


def pretty(phone: str | None) -> str:
    """"+15550100123" -> "+1 555-010-0123": readable, for the wallet side (the wallet's
    owner is a party to the conversation; logs use ``mask`` instead)."""
    if not phone:
        return ""
    try:
        return str(phonenumbers.format_number(
            phonenumbers.parse(phone, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL))
    except phonenumbers.NumberParseException:
        return phone
