"""The phone channel (SMS and WhatsApp through a ``PhoneNetwork``): a strategy of the
outbox engine.

How a text goes out
    Facts gathered in a read transaction (the phone's contact, the day's counts) →
    ``decide_outbound`` under the rule that governs the number it leaves from (an API
    conversation's phone is governed like any other) → refused: failed with our code;
    otherwise rendered (the sender label on the first part only), split into parts of
    at most 1600 characters, paced by the engine and sent.

Outcomes
    ``RetryableSendError`` → retry (the engine's backoff, never sooner than Retry-After,
    which also pauses the sender). ``PermanentSendError`` → failed with Twilio's code.
    ``UnknownOutcomeError`` → unknown; reconciling looks the message up with
    ``find_sent`` (found: sent, with that sid; not found: due again at once) — never a
    blind re-send. Sids other deliveries already hold are passed over: a phone texted
    "ok" twice has two matching messages.

Files
    A wallet's files (``Media.held``) are opened when the text goes (``MediaCarrier.
    for_phone``: downloaded, digest checked, decrypted, stored, signed) within half of
    what the lease has left: MediaUrls on MMS and WhatsApp (one file per message there),
    or links in the body where MMS does not reach (``files_as_links``). What cannot go is
    reported to the wallets in one line (``Sent.note``), or fails the delivery when
    nothing of the message can.

Long bodies
    Several messages, in order, for one delivery; the delivery records the *last* part's
    sid, so its status callbacks (and a reconciliation, which looks for the last part)
    speak for the whole. On any attempt after the first, each part is looked up before it
    is sent, so parts that already went out (a retry after part 2 of 3 failed, a crash
    mid-way) are not sent again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gateway.delivery.channel import Attempt
from gateway.domain.clock import Clock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import PHONE_CHANNELS, Channel, DeliveryJob
from gateway.domain.outcomes import Failed, Outcome, Retry, Sent, Unknown
from gateway.domain.policy import (
    OutboundDecision,
    OutboundPolicy,
    Refuse,
    SendAsIs,
    SendTemplate,
    decide_outbound,
    files_as_links,
)
from gateway.domain.ports import OutboundText, PhoneNetwork, Store, StoreTx
from gateway.domain.rendering import Rendering, pretty
from gateway.domain.rules import RuleBook
from gateway.errors import (
    BlobStoreError,
    MediaFetchFailed,
    PermanentSendError,
    RetryableSendError,
    UnknownOutcomeError,
)
from gateway.media.carrier import ForPhone, MediaCarrier
from gateway.twilio.split import MAX_BODY, split_body

log = logging.getLogger(__name__)

DAY = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class PhoneSettings:
    status_callback_url: str | None = None
    max_body: int = MAX_BODY
    # find_sent looks from the delivery's creation minus this (our clock vs Twilio's).
    clock_skew: float = 120.0
    # Wait this long after claiming unknown outcomes before looking them up, so a request
    # Twilio is still working on when we gave up has landed.
    reconcile_settle: float = 5.0


class PhoneChannel:
    name: str = "phone"
    channels: tuple[Channel, ...] = PHONE_CHANNELS
    one_send_per_message: bool = False

    def __init__(self, store: Store, phone: PhoneNetwork, rules: RuleBook, clock: Clock,
                 settings: PhoneSettings, *, media: MediaCarrier | None = None) -> None:
        """``media``: opens a wallet's files for the phone (without it they are left
        out, and only their names are texted)."""
        self._store = store
        self._phone = phone
        self._rules = rules
        self._rendering = Rendering(rules)
        self._clock = clock
        self._settings = settings
        self._media = media
        self.reconcile_settle = settings.reconcile_settle

    def sender_of(self, job: DeliveryJob) -> str:
        return job.target.proxy_address or ""

    def policy_for(self, job: DeliveryJob) -> OutboundPolicy:
        rule = self._rules.governing(job.target.proxy_address, job.target.channel,
                                     job.conversation.rule)
        return rule.outbound if rule is not None else OutboundPolicy()

    async def deliver(self, attempt: Attempt) -> Outcome:
        job = attempt.job
        # the store gives every phone participant both (a delivery to a phone has them)
        assert job.target.address is not None and job.target.proxy_address is not None
        if job.reconciling:
            return await self._reconcile(job)
        decision = await self._decide(job, with_quotas=True)
        if isinstance(decision, Refuse):
            return Failed(decision.reason, decision.code, refused=True)
        files: ForPhone | None = None
        note: str | None = None
        if isinstance(decision, SendAsIs) and self._media is not None \
                and any(m.held for m in job.message.media):
            opened = await self._open_files(job)
            if not isinstance(opened, tuple):
                return opened
            files, note = opened
        texts = self.texts(job, decision, files)
        if not texts:
            return Failed("nothing to send to a phone", refused=True)
        gaps = await attempt.pace(len(texts))
        last_sid: str | None = None
        for i, text in enumerate(texts):
            if job.delivery.attempts > 1 and len(texts) > 1:
                found = await self._find(job, text.body)
                if found is not None and found != last_sid:  # equal parts find the same sid
                    last_sid = found
                    continue
            if i and gaps[i - 1] > 0:
                await asyncio.sleep(gaps[i - 1])
            try:
                sent = await self._phone.send(text)
            except RetryableSendError as exc:
                if exc.retry_after:
                    attempt.pause(exc.retry_after)
                return Retry(str(exc), exc.provider_code, retry_after=exc.retry_after)
            except PermanentSendError as exc:
                return Failed(str(exc), exc.provider_code)
            except UnknownOutcomeError as exc:
                return Unknown(str(exc))
            last_sid = sent.provider_id
        assert last_sid is not None
        return Sent(last_sid, note=note)

    async def _open_files(self, job: DeliveryJob) -> tuple[ForPhone, str | None] | Outcome:
        """A wallet's files made ready (downloaded, checked, decrypted, stored, signed)
        within what the lease leaves, and the line the wallet is told about them; or
        the outcome when they cannot go now (a retry) or none of the message can."""
        media = self._media
        assert media is not None and job.target.address is not None and job.lease is not None
        phone = pretty(job.target.address)
        why_links = files_as_links(self.policy_for(job), job.target.channel, job.target.address)
        # half of what the lease has left: the other half is the sends'
        room = (job.lease.until - self._clock.now()).total_seconds() / 2
        try:
            async with asyncio.timeout(max(room, 1.0)):
                files = await media.for_phone(job.message, channel=job.target.channel,
                                              as_links=why_links is not None)
        except TimeoutError:
            return Retry("opening the files took longer than the delivery's lease")
        except (MediaFetchFailed, BlobStoreError) as exc:
            return Retry(f"a file could not be fetched: {exc}")
        notes = []
        if files.refused:
            if not files.urls and not files.links and not (job.message.body or "").strip():
                return Failed("; ".join(files.refused), refused=True)
            notes.append(f"Not delivered to {phone}: {'; '.join(files.refused)}.")
        if files.links:
            days = media.settings.link_ttl / timedelta(days=1)
            notes.append(f"Sent to {phone} as a link valid for {days:g} days ({why_links}).")
        return files, " ".join(notes) or None

    async def _reconcile(self, job: DeliveryJob) -> Outcome:
        """A delivery whose send may or may not have happened: look for its last part.

        What was sent is worked out again from today's facts. If the WhatsApp window has
        opened since an unknown template send, the plain text is looked for instead, not
        found, and sent: the phone then gets both, which is the lesser harm than neither.
        """
        decision = await self._decide(job, with_quotas=False)
        # A refusal now does not mean it was refused then: look for the plain text. A
        # template's text is Twilio's to render, so any message after ours matches it.
        texts = self.texts(job, SendAsIs() if isinstance(decision, Refuse) else decision)
        body = texts[-1].body if texts else None
        if any(m.held for m in job.message.media) and job.target.address is not None \
                and files_as_links(self.policy_for(job), job.target.channel,
                                   job.target.address):
            # Its links were signed when it was sent (their expiry is in them): any text
            # to the phone from this number since matches. Its lane held every later one.
            body = None
        try:
            provider_id = await self._find(job, body)
        except RetryableSendError as exc:
            log.warning("delivery %s: lookup failed (%s); will look again", job.delivery.id,
                        exc)
            return Unknown(f"lookup failed ({exc}); will look again")
        if provider_id is not None:
            log.info("delivery %s reconciled: found at the provider", job.delivery.id)
            return Sent(provider_id)
        log.info("delivery %s reconciled: not at the provider; sending again",
                 job.delivery.id)
        return Retry("not found at the provider; sending again", job.delivery.error_code,
                     at_once=True)

    async def _decide(self, job: DeliveryJob, *, with_quotas: bool) -> OutboundDecision:
        target = job.target
        assert target.address is not None and target.proxy_address is not None
        now = self._clock.now()
        policy = self.policy_for(job)
        async with self._store.transaction() as tx:
            contact = await tx.get_contact(target.address, target.proxy_address, target.channel)
            to_phone, by_rule = ((await self._sent_before(tx, job, policy, now))
                                 if with_quotas else (0, 0))
        return decide_outbound(
            policy=policy, channel=target.channel, contact=contact,
            sent_to_phone_today=to_phone, sent_by_rule_today=by_rule, now=now)

    def texts(self, job: DeliveryJob, decision: OutboundDecision,
              files: ForPhone | None = None) -> list[OutboundText]:
        """What the delivery becomes: one template message, or the rendered body in
        parts (the sender label and the media on the first; on WhatsApp, which takes one
        file per message, each further file in a message of its own), or nothing when
        there is nothing to send. ``files``: a wallet's files made ready (without them
        only the URLs the message was given go, an API caller's)."""
        target = job.target
        assert target.address is not None and target.proxy_address is not None
        base = OutboundText(to=target.address, from_=target.proxy_address,
                            channel=target.channel, body=None,
                            status_callback=self._settings.status_callback_url)
        if isinstance(decision, SendTemplate):
            return [replace(base, content_sid=decision.template.content_sid,
                            content_variables=dict(decision.template.variables))]
        if files is None:
            files = ForPhone(urls=tuple(m.url for m in job.message.media if not m.held))
        media = files.urls
        rendered = self._rendering.for_phone(job)
        if files.links:
            rendered = replace(rendered, body="\n".join(
                [rendered.body, *(f"{name}: {url}" for name, url in files.links)]))
        if not rendered.text.strip() and not media:
            return []
        parts = split_body(rendered.text, self._settings.max_body)
        if len(parts) > 1 and rendered.label:
            # the label belongs to the first part: never a message of its own
            parts = split_body(rendered.body, self._settings.max_body - len(rendered.label))
            parts[0] = rendered.label + parts[0]
        first, rest = ((media[:1], media[1:]) if target.channel is Channel.WHATSAPP
                       else (media, ()))
        return ([replace(base, body=part, media_urls=first if i == 0 else ())
                 for i, part in enumerate(parts)]
                + [replace(base, media_urls=(url,)) for url in rest])

    async def _sent_before(self, tx: StoreTx, job: DeliveryJob, policy: OutboundPolicy,
                           now: datetime) -> tuple[int, int]:
        """Texts from this number (the governing rule's) in the last day that were made
        before this delivery, to this phone and in all, each counted only when the
        policy limits it: the store counts everything made since a time, so the ones made
        at or after this delivery are subtracted."""
        since = now - DAY
        created = job.delivery.created_at
        target = job.target
        assert target.proxy_address is not None
        rule = self._rules.governing(target.proxy_address, target.channel,
                                     job.conversation.rule)
        proxy = target.proxy_address
        channels = sorted(rule.channels) if rule is not None else [target.channel]

        async def before(address: PhoneNumber | None) -> int:
            counted = (await tx.count_outbound(since=since, proxy=proxy, channels=channels,
                                               address=address)
                       - await tx.count_outbound(since=max(created, since), proxy=proxy,
                                                 channels=channels, address=address))
            return max(counted, 0)

        to_phone = await before(target.address) if policy.per_phone_daily is not None else 0
        by_rule = await before(None) if policy.per_rule_daily is not None else 0
        return to_phone, by_rule

    async def _find(self, job: DeliveryJob, body: str | None) -> str | None:
        """The sid of ``body`` sent for this delivery, if it went out. A phone may get the
        same text twice ("ok"): the earlier delivery's message matches too, so the sids
        other deliveries already hold are passed over."""
        target = job.target
        assert target.address is not None and target.proxy_address is not None
        to, from_ = PhoneNumber(target.address), PhoneNumber(target.proxy_address)
        sent_after = job.delivery.created_at - timedelta(seconds=self._settings.clock_skew)
        async with self._store.transaction() as tx:
            # updated at or after their send, which was after sent_after less our skew
            taken = await tx.provider_ids_sent_to(
                to, from_, besides=job.delivery.id,
                since=sent_after - timedelta(seconds=self._settings.clock_skew))
        found = await self._phone.find_sent(to=to, from_=from_, channel=target.channel,
                                            body=body, sent_after=sent_after, skip=taken)
        return found.provider_id if found else None
