"""The phone delivery worker: takes due SMS/WhatsApp deliveries from the store's outbox
and sends them through a ``PhoneNetwork``.

How a delivery goes out
    Claimed (state ``sending``, attempts + 1, leased) → facts gathered in a transaction
    → ``decide_outbound`` → refused: ``failed`` with our code, and the author is told;
    otherwise rendered, split, paced by its sender's token bucket and sent.

Senders never block each other
    Each of our numbers has a lane: a queue worked by its own task at its own rate. A
    lane holds at most what it can send well inside the lease; claimed jobs beyond that
    are handed back with a later due time spread at the lane's rate (they keep their
    place in line, and another sender's fresh message is claimed before them). A
    hand-back counts as an attempt in the store (so a long wait leaves fewer retries for
    real errors), but waiting alone never fails a delivery. Pacing is per process: with
    several gateway processes sharing one outbox, divide the configured rates among them.

Outcomes
    ``RetryableSendError`` → back to pending after exponential backoff with full
    jitter, never sooner than Retry-After (which also pauses the whole lane), failed
    after ``max_attempts``. ``PermanentSendError`` → failed with Twilio's code.
    ``UnknownOutcomeError`` → ``unknown``; the reconciler looks the message up with
    ``find_sent`` (found: sent, with that sid; not found: pending again, or failed once
    ``max_attempts`` is spent) — never a blind re-send. Sids other deliveries already
    hold are passed over: a phone texted "ok" twice has two matching messages. A worker
    that dies between claim and result leaves a ``sending`` row whose lease runs out; the
    store hands it to the reconciler the same way.

Late results
    Every result is written under the lease it was claimed with (``lease=`` on the
    store's mark_* calls). A worker that stalled past its lease may find the row taken
    by the reconciler or another worker: its result is then dropped (logged, observed as
    "late"), never written over theirs; the row's new owner settles it.

Long bodies
    A body over 1600 characters goes as several messages, in order, for one Delivery.
    The Delivery records the *last* part's sid, so its status callbacks (and a
    reconciliation, which looks for the last part) speak for the whole; callbacks for
    earlier parts find no delivery and are kept unused by the store. On any attempt after
    the first, each part is looked up before it is sent, so parts that already went out
    (a retry after part 2 of 3 failed, a crash mid-way) are not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from gateway.domain.clock import Clock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import (
    PHONE_CHANNELS,
    Delivery,
    DeliveryJob,
    DeliveryState,
    Participant,
)
from gateway.domain.phones import mask
from gateway.domain.policy import (
    OutboundDecision,
    OutboundPolicy,
    Refuse,
    SendAsIs,
    SendTemplate,
    decide_outbound,
)
from gateway.domain.ports import OutboundText, PhoneNetwork, Store, StoreTx
from gateway.domain.relay import delivery_event
from gateway.errors import (
    LeaseLost,
    PermanentSendError,
    RetryableSendError,
    UnknownOutcomeError,
)
from gateway.twilio.ratelimit import TokenBucket
from gateway.twilio.split import MAX_BODY, split_body

log = logging.getLogger(__name__)

DAY = timedelta(hours=24)

PolicyFor = Callable[[str | None], OutboundPolicy]
Render = Callable[[DeliveryJob], str]
OnFailed = Callable[[DeliveryJob, int | None, str], Awaitable[None]]
Observer = Callable[[str, float], None]
"""Called with an outcome ("sent", "retry", "failed", "refused", "unknown", "late",
"error") and the seconds since the message was recorded. "late": a result that came after
the worker's lease ran out, and was dropped."""


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    rate_per_second: float = 1.0  # a long code's pace
    burst: int = 1
    rate_overrides: Mapping[str, float] = field(default_factory=dict)  # our number -> msgs/s
    max_attempts: int = 8
    backoff_base: float = 2.0  # seconds; attempt n waits up to base * 2**(n-1)
    backoff_cap: float = 900.0
    poll_interval: float = 2.0
    reconcile_interval: float = 15.0
    # Wait this long after claiming unknown outcomes before looking them up, so a request
    # Twilio is still working on when we gave up has landed.
    reconcile_settle: float = 5.0
    lease: float = 120.0
    send_timeout: float = 15.0  # the longest one send may take (the HTTP client's timeout)
    # Room left between the end of a send and the end of its lease, so the reconciler
    # never takes a row while this worker may still write to it.
    lease_margin: float = 5.0
    batch_size: int = 50
    # find_sent looks from the delivery's creation minus this (our clock vs Twilio's).
    clock_skew: float = 120.0
    max_body: int = MAX_BODY


@dataclass(slots=True)
class _Claimed:
    job: DeliveryJob
    lease_until: datetime


@dataclass(slots=True)
class _Lane:
    bucket: TokenBucket
    queue: deque[_Claimed] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    busy: bool = False
    horizon: datetime | None = None  # the latest due time handed back for this lane


class PhoneOutbox:
    def __init__(
        self, store: Store, phone: PhoneNetwork, clock: Clock, settings: OutboxSettings, *,
        status_callback_url: str | None, policy_for: PolicyFor, render: Render,
        on_failed: OnFailed, observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._phone = phone
        self._clock = clock
        self._settings = settings
        self._status_callback_url = status_callback_url
        self._policy_for = policy_for
        self._render = render
        self._on_failed = on_failed
        self._observer = observer
        self._lanes: dict[str, _Lane] = {}
        self._wake = asyncio.Event()
        self._lease = timedelta(seconds=settings.lease)
        self._running = False

    # --- DeliveryTaker: deliveries the relay claimed at birth for this worker ------------

    def lease_for(self, target: Participant, now: datetime) -> datetime | None:
        if not self._running:
            return None
        lane = self._lane(target.proxy_address or "")
        if len(lane.queue) + lane.busy >= self._capacity(lane):
            return None  # a busy sender: left pending, claimed (and paced) later
        return now + self._lease

    def take(self, job: DeliveryJob, lease_until: datetime) -> None:
        sender = self._sender(job)
        lane = self._lane(sender)
        lane.queue.append(_Claimed(job, lease_until))
        self._start_lane(sender, lane)

    # --- running ------------------------------------------------------------------------

    def wake(self) -> None:
        """New work is in the outbox: claim now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Claims and reconciles until cancelled."""
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._claim_loop())
                group.create_task(self._reconcile_loop())
        finally:
            self._running = False
            await self._stop_lanes()

    async def run_once(self) -> int:
        """Claims one batch and waits until every lane has sent what it holds; returns
        how many deliveries were claimed."""
        claimed = await self._claim()
        await self.drain()
        return claimed

    async def drain(self) -> None:
        """Waits until every lane is idle."""
        while tasks := [lane.task for lane in self._lanes.values() if lane.task]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reconcile_once(self) -> int:
        now = self._clock.now()
        lease_until = now + self._lease
        async with self._store.transaction() as tx:
            jobs = await tx.claim_reconcilable(PHONE_CHANNELS, now=now,
                                               lease_until=lease_until,
                                               limit=self._settings.batch_size)
        if not jobs:
            return 0
        await asyncio.sleep(self._settings.reconcile_settle)
        for job in jobs:
            await self._guarded(self._reconcile(_Claimed(job, lease_until)), job)
        return len(jobs)

    async def _claim_loop(self) -> None:
        while True:
            try:
                claimed = await self._claim()
            except Exception:  # e.g. the database is down: counted, logged, tried again
                log.exception("claiming phone deliveries failed")
                self._observe_error()
                claimed = 0
            if claimed < self._settings.batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.poll_interval):
                        await self._wake.wait()
                self._wake.clear()

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:  # counted, logged, tried again at the next interval
                log.exception("reconciling phone deliveries failed")
                self._observe_error()
            await asyncio.sleep(self._settings.reconcile_interval)

    async def _stop_lanes(self) -> None:
        """Cancels the lanes and hands back what they had not started, so another worker
        can take it at once rather than after the lease and a reconciliation."""
        waiting = [claimed for lane in self._lanes.values() for claimed in lane.queue]
        for lane in self._lanes.values():
            lane.queue.clear()
            if lane.task:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self._lanes.values() if lane.task),
                             return_exceptions=True)
        if waiting:
            now = self._clock.now()
            try:
                async with asyncio.timeout(5), self._store.transaction() as tx:
                    for claimed in waiting:
                        with contextlib.suppress(LeaseLost):  # not ours to hand back now
                            await _hand_back(tx, claimed, due=now, now=now)
            except Exception:  # shutting down; their leases run out and the reconciler acts
                log.warning("could not hand back %d unsent deliveries on stop", len(waiting),
                            exc_info=True)

    # --- claiming and lanes -------------------------------------------------------------------

    async def _claim(self) -> int:
        now = self._clock.now()
        lease_until = now + self._lease
        # Jobs reach the lanes only once the claim has committed: a claim that rolls back
        # leaves its rows pending, and queued copies of them would be sent twice.
        accepted: list[tuple[_Lane, _Claimed]] = []
        async with self._store.transaction() as tx:
            jobs = await tx.claim_deliveries(PHONE_CHANNELS, now=now, lease_until=lease_until,
                                             limit=self._settings.batch_size)
            handed_back = 0
            for job in jobs:
                lane = self._lane(self._sender(job))
                held = (len(lane.queue) + lane.busy
                        + sum(1 for taken, _ in accepted if taken is lane))
                if held < self._capacity(lane):
                    accepted.append((lane, _Claimed(job, lease_until)))
                    continue
                due = max(lane.horizon or now,
                          now + timedelta(seconds=lane.bucket.backlog_seconds(held)))
                lane.horizon = due + timedelta(seconds=1 / lane.bucket.rate)
                await _hand_back(tx, _Claimed(job, lease_until), due=lane.horizon, now=now)
                handed_back += 1
        for lane, claimed in accepted:
            lane.queue.append(claimed)
        if handed_back:
            log.info("handed back %d deliveries to pace busy senders", handed_back)
        for sender, lane in self._lanes.items():
            self._start_lane(sender, lane)
        return len(jobs)

    def _start_lane(self, sender: str, lane: _Lane) -> None:
        if lane.queue and lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._work_lane(sender))

    def _sender(self, job: DeliveryJob) -> str:
        return job.target.proxy_address or ""

    def _lane(self, sender: str) -> _Lane:
        lane = self._lanes.get(sender)
        if lane is None:
            rate = self._settings.rate_overrides.get(sender, self._settings.rate_per_second)
            lane = self._lanes[sender] = _Lane(TokenBucket(rate, self._settings.burst))
        return lane

    def _capacity(self, lane: _Lane) -> int:
        """As many jobs as the lane sends in half a lease, less one send's timeout."""
        budget = self._settings.lease / 2 - self._settings.send_timeout
        return max(1, int(lane.bucket.rate * budget))

    async def _work_lane(self, sender: str) -> None:
        lane = self._lanes[sender]
        try:
            while lane.queue:
                claimed = lane.queue.popleft()
                lane.busy = True
                try:
                    await self._guarded(self._deliver(claimed, lane), claimed.job)
                finally:
                    lane.busy = False
        finally:
            lane.task = None

    async def _guarded(self, work: Awaitable[None], job: DeliveryJob) -> None:
        """One delivery's failure must not stop its lane. Its row stays leased; when the
        lease runs out the reconciler takes it, so nothing is lost or sent twice."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery %s failed unexpectedly", job.delivery.id)
            self._observe_error()

    # --- one delivery ---------------------------------------------------------------------

    async def _deliver(self, claimed: _Claimed, lane: _Lane) -> None:
        job = claimed.job
        if not _addressable(job):
            await self._fail(claimed, None,
                             "the participant has no phone number or proxy number",
                             outcome="failed")
            return
        decision = await self._decide(job, with_quotas=True)
        if isinstance(decision, Refuse):
            await self._fail(claimed, decision.code, decision.reason, outcome="refused")
            return
        texts = self._texts(job, decision)
        if not texts:
            await self._fail(claimed, None, "nothing to send to a phone", outcome="refused")
            return
        last_sid: str | None = None
        for text in texts:
            if job.delivery.attempts > 1 and len(texts) > 1:
                found = await self._find(job, text.body)
                if found is not None and found != last_sid:  # equal parts find the same sid
                    last_sid = found
                    continue
            wait = lane.bucket.reserve()
            if not self._fits_lease(claimed, wait):
                # Sending after the lease ran out could race the reconciler: hand it back
                # while it is still ours, due when the sender will have room.
                lane.bucket.cancel()
                now = self._clock.now()
                await self._write_result(claimed, functools.partial(
                    _hand_back, claimed=claimed, due=now + timedelta(seconds=wait), now=now))
                return
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                sent = await self._phone.send(text)
            except RetryableSendError as exc:
                if exc.retry_after:
                    lane.bucket.pause(exc.retry_after)
                await self._retry_or_fail(claimed, exc)
                return
            except PermanentSendError as exc:
                await self._fail(claimed, exc.provider_code, str(exc), outcome="failed")
                return
            except UnknownOutcomeError as exc:
                log.warning("delivery %s: outcome unknown (%s); will reconcile",
                            job.delivery.id, exc)
                if await self._write_result(claimed, lambda tx: tx.mark_unknown(
                        job.delivery.id, now=self._clock.now(), lease=claimed.lease_until)):
                    self._observe("unknown", job)
                return
            last_sid = sent.provider_id
        assert last_sid is not None
        await self._sent(claimed, last_sid)

    def _fits_lease(self, claimed: _Claimed, wait: float) -> bool:
        """Whether a send that starts after ``wait`` seconds ends well inside the lease."""
        margin = self._settings.lease_margin + self._settings.send_timeout + wait
        return self._clock.now() + timedelta(seconds=margin) < claimed.lease_until

    async def _decide(self, job: DeliveryJob, *, with_quotas: bool) -> OutboundDecision:
        target = job.target
        assert target.address is not None and target.proxy_address is not None, \
            "phone deliveries target phone participants"
        now = self._clock.now()
        policy = self._policy_for(job.conversation.rule)
        async with self._store.transaction() as tx:
            contact = await tx.get_contact(target.address, target.proxy_address, target.channel)
            to_phone, by_rule = ((await self._sent_before(tx, job, policy, now))
                                 if with_quotas else (0, 0))
        return decide_outbound(
            policy=policy, channel=target.channel, contact=contact,
            sent_to_phone_today=to_phone, sent_by_rule_today=by_rule, now=now)

    def _texts(self, job: DeliveryJob, decision: OutboundDecision) -> list[OutboundText]:
        """What the delivery becomes: one template message, or the rendered body in
        parts (media on the first), or nothing when there is nothing to send."""
        target = job.target
        assert target.address is not None and target.proxy_address is not None
        base = OutboundText(to=target.address, from_=target.proxy_address,
                            channel=target.channel, body=None,
                            status_callback=self._status_callback_url)
        if isinstance(decision, SendTemplate):
            return [replace(base, content_sid=decision.template.content_sid,
                            content_variables=dict(decision.template.variables))]
        media = tuple(m.url for m in job.message.media)
        body = self._render(job)
        if not body.strip() and not media:
            return []
        parts = split_body(body, self._settings.max_body)
        return [replace(base, body=part, media_urls=media if i == 0 else ())
                for i, part in enumerate(parts)]

    async def _sent_before(self, tx: StoreTx, job: DeliveryJob, policy: OutboundPolicy,
                           now: datetime) -> tuple[int, int]:
        """Deliveries to this phone and by this rule in the last day that were created
        before this one, each counted only when the policy limits it: the store counts
        everything created since a time, so the ones created at or after this delivery
        are subtracted."""
        since = now - DAY
        created = job.delivery.created_at
        address = job.target.address
        rule = job.conversation.rule
        to_phone = 0
        if policy.per_phone_daily is not None:  # the rule's limit: its own texts count
            to_phone = (
                await tx.count_outbound(since=since, address=address, rule=rule)
                - await tx.count_outbound(since=max(created, since), address=address,
                                          rule=rule))
        by_rule = 0
        if rule is not None and policy.per_rule_daily is not None:
            by_rule = (await tx.count_outbound(since=since, rule=rule)
                       - await tx.count_outbound(since=max(created, since), rule=rule))
        return max(to_phone, 0), max(by_rule, 0)

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

    async def _reconcile(self, claimed: _Claimed) -> None:
        """A delivery whose send may or may not have happened: look for its last part.

        What was sent is worked out again from today's facts. If the WhatsApp window has
        opened since an unknown template send, the plain text is looked for instead, not
        found, and sent: the phone then gets both, which is the lesser harm than neither.
        """
        job = claimed.job
        if not _addressable(job):
            await self._fail(claimed, None,
                             "the participant has no phone number or proxy number",
                             outcome="failed")
            return
        decision = await self._decide(job, with_quotas=False)
        # A refusal now does not mean it was refused then: look for the plain text. A
        # template's text is Twilio's to render, so any message after ours matches it.
        texts = self._texts(job, SendAsIs() if isinstance(decision, Refuse) else decision)
        last_body = texts[-1].body if texts else None
        try:
            provider_id = await self._find(job, last_body)
        except RetryableSendError as exc:
            # Leave it leased as unknown; once the lease runs out it is looked up again.
            log.warning("delivery %s: lookup failed (%s); will try again", job.delivery.id, exc)
            return
        if provider_id is None and job.delivery.attempts >= self._settings.max_attempts:
            # Every attempt ended without an answer and nothing went out: stop here rather
            # than cycle between sending and looking forever.
            await self._fail(claimed, job.delivery.error_code,
                             f"gave up after {job.delivery.attempts} attempts without an "
                             "answer from the provider", outcome="failed")
            return
        if provider_id is not None:
            log.info("delivery %s reconciled: found", job.delivery.id)
            await self._sent(claimed, provider_id)
            return
        now = self._clock.now()
        if await self._write_result(claimed, lambda tx: tx.mark_retry(
                job.delivery.id, next_attempt_at=now, error_code=None,
                error_message="not found at the provider; sending again", now=now,
                lease=claimed.lease_until)):
            log.info("delivery %s reconciled: not sent, pending again", job.delivery.id)
            self._observe("retry", job)
            self.wake()

    # --- outcomes -------------------------------------------------------------------------

    async def _retry_or_fail(self, claimed: _Claimed, exc: RetryableSendError) -> None:
        job = claimed.job
        if job.delivery.attempts >= self._settings.max_attempts:
            await self._fail(claimed, exc.provider_code,
                             f"gave up after {job.delivery.attempts} attempts: {exc}",
                             outcome="failed")
            return
        ceiling = min(self._settings.backoff_cap,
                      self._settings.backoff_base * 2 ** max(job.delivery.attempts - 1, 0))
        delay = random.uniform(0, ceiling)  # noqa: S311 -- jitter, not cryptography
        await self._retry(claimed, exc.provider_code, str(exc),
                          delay=max(delay, exc.retry_after or 0.0))

    async def _retry(self, claimed: _Claimed, code: int | None, reason: str, *,
                     delay: float) -> None:
        job = claimed.job
        now = self._clock.now()
        log.info("delivery %s to %s: retry in %.1fs (%s)", job.delivery.id,
                 mask(job.target.address or ""), delay, reason)
        if await self._write_result(claimed, lambda tx: tx.mark_retry(
                job.delivery.id, next_attempt_at=now + timedelta(seconds=delay),
                error_code=code, error_message=reason, now=now, lease=claimed.lease_until)):
            self._observe("retry", job)

    async def _sent(self, claimed: _Claimed, provider_id: str) -> None:
        """Records the provider id. A status callback that came before it (the store kept
        it) is applied there: its event is written now, and a failure is told to the
        author's side as any other."""
        job = claimed.job
        now = self._clock.now()

        async def write(tx: StoreTx) -> Delivery:
            delivery = await tx.mark_sent(job.delivery.id, provider_id=provider_id, now=now,
                                          lease=claimed.lease_until)
            if delivery.state is not DeliveryState.SENT:  # the callback's news is out now
                await tx.add_event("delivery.updated", conversation_id=job.conversation.id,
                                   data=delivery_event(delivery), now=now)
            return delivery

        delivery = await self._write_result(claimed, write)
        if delivery is None:
            return
        self._observe("sent", job)
        if delivery.state.is_failure:
            log.warning("delivery %s to %s %s before its send returned (code %s)",
                        job.delivery.id, mask(job.target.address or ""),
                        delivery.state.value, delivery.error_code)
            await self._on_failed(job, delivery.error_code,
                                  delivery.error_message or f"message {delivery.state.value}")

    async def _fail(self, claimed: _Claimed, code: int | None, reason: str, *,
                    outcome: str) -> None:
        job = claimed.job
        log.warning("delivery %s to %s %s: %s (code %s)", job.delivery.id,
                    mask(job.target.address or ""), outcome, reason, code)
        if await self._write_result(claimed, lambda tx: tx.mark_failed(
                job.delivery.id, error_code=code, error_message=reason,
                now=self._clock.now(), lease=claimed.lease_until)):
            self._observe(outcome, job)
            await self._on_failed(job, code, reason)

    async def _write_result(self, claimed: _Claimed,
                            write: Callable[[StoreTx], Awaitable[Delivery]]) -> Delivery | None:
        """Writes a delivery's result under the lease it was claimed with; None when the
        lease was lost meanwhile and the result dropped (the row's new owner settles it)."""
        try:
            async with self._store.transaction() as tx:
                return await write(tx)
        except LeaseLost:
            log.warning("delivery %s: result came after the lease ran out; dropped, the "
                        "delivery's new owner settles it", claimed.job.delivery.id)
            self._observe("late", claimed.job)
            return None

    def _observe_error(self) -> None:
        if self._observer is not None:
            self._observer("error", 0.0)

    def _observe(self, outcome: str, job: DeliveryJob) -> None:
        if self._observer is not None:
            latency = (self._clock.now() - job.message.created_at).total_seconds()
            self._observer(outcome, max(latency, 0.0))


def _addressable(job: DeliveryJob) -> bool:
    return job.target.address is not None and job.target.proxy_address is not None


async def _hand_back(tx: StoreTx, claimed: _Claimed, *, due: datetime,
                     now: datetime) -> Delivery:
    """Back to pending without having tried: neither an attempt nor an error."""
    return await tx.hand_back(claimed.job.delivery.id, due=due, now=now,
                              lease=claimed.lease_until)
