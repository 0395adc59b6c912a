"""Whether a text may go to a phone now, and in what form. Pure: the caller gathers the
facts (contact, counts) inside its transaction and acts on the decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain.models import Channel, Consent, Contact
from gateway.domain.phones import country_of

WHATSAPP_WINDOW = timedelta(hours=24)
# Where Twilio delivers MMS; elsewhere an MMS arrives as an SMS with a link of Twilio's,
# or not at all, so the gateway sends its own link instead.
MMS_COUNTRIES = frozenset({"US", "CA"})

# Our own refusal codes, kept in Delivery.error_code beside Twilio's (which are < 100000).
REFUSED_OPTED_OUT = 900001
REFUSED_NEVER_TEXTED_IN = 900002
REFUSED_PHONE_QUOTA = 900003
REFUSED_RULE_QUOTA = 900004
REFUSED_WHATSAPP_WINDOW = 900005


@dataclass(frozen=True, slots=True)
class WhatsAppTemplate:
    content_sid: str
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """A rule's limits on what goes out to phones."""

    allow_unsolicited: bool = False  # may text a phone that never texted in first
    per_phone_daily: int | None = None
    per_rule_daily: int | None = None
    whatsapp_template: WhatsAppTemplate | None = None
    # Files go to SMS phones as a short text with an expiring link, never as MMS (which
    # reaches only US and Canadian numbers anyway).
    sms_only: bool = False


@dataclass(frozen=True, slots=True)
class SendAsIs:
    pass


@dataclass(frozen=True, slots=True)
class SendTemplate:
    template: WhatsAppTemplate


@dataclass(frozen=True, slots=True)
class Refuse:
    code: int
    reason: str


OutboundDecision = SendAsIs | SendTemplate | Refuse


def decide_outbound(
    *,
    policy: OutboundPolicy,
    channel: Channel,
    contact: Contact | None,
    sent_to_phone_today: int,
    sent_by_rule_today: int,
    now: datetime,
) -> OutboundDecision:
    """``sent_*_today`` count deliveries already made in the last 24 hours, this one
    excluded."""
    if contact is not None and contact.consent is Consent.DENIED:
        return Refuse(REFUSED_OPTED_OUT, "the phone replied STOP")
    texted_in = contact is not None and contact.first_inbound_at is not None
    if not texted_in and not policy.allow_unsolicited:
        return Refuse(REFUSED_NEVER_TEXTED_IN, "the phone has not texted this number first")
    if policy.per_phone_daily is not None and sent_to_phone_today >= policy.per_phone_daily:
        return Refuse(REFUSED_PHONE_QUOTA, "daily quota for this phone reached")
    if policy.per_rule_daily is not None and sent_by_rule_today >= policy.per_rule_daily:
        return Refuse(REFUSED_RULE_QUOTA, "daily quota for this rule reached")
    if channel is Channel.WHATSAPP:
        last = contact.last_inbound_at if contact is not None else None
        if last is None or now - last > WHATSAPP_WINDOW:
            if policy.whatsapp_template is None:
                return Refuse(REFUSED_WHATSAPP_WINDOW,
                              "outside WhatsApp's 24-hour window and no template configured")
            return SendTemplate(policy.whatsapp_template)
    return SendAsIs()


def files_as_links(policy: OutboundPolicy, channel: Channel, phone: str) -> str | None:
    """Why files go to this phone as a short text with a link rather than as MMS; None
    when they go as media (MMS, or WhatsApp's own)."""
    if channel is not Channel.SMS:
        return None
    if policy.sms_only:
        return "this number sends files as links"
    if country_of(phone) not in MMS_COUNTRIES:
        return "MMS does not reach that number"
    return None
