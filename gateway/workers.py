"""Background work on the chat (XMTP) side: the delivery worker that posts recorded
messages into conversations' groups, and the stream consumer that records what wallets
send. Both are generic over the ``ChatNetwork`` port. The phone side's worker lives in
``gateway.twilio.outbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain.clock import Clock
from gateway.domain.ids import ConversationId, MessageId, ParticipantId, WalletAddress
from gateway.domain.models import (
    Channel,
    Consent,
    Delivery,
    DeliveryJob,
    DeliveryState,
    MessageSource,
    Participant,
)
from gateway.domain.ports import ChatMessage, ChatNetwork, NewMessage, Store, StoreTx
from gateway.domain.relay import Relay
from gateway.domain.rules import short_address
from gateway.errors import (
    ChatNetworkError,
    Conflict,
    GatewayError,
    WalletNotReachable,
    first_line,
)
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


class Waker:
    """Wakes the worker of a channel as soon as the relay has put work in its outbox."""

    def __init__(self) -> None:
        self._events: dict[Channel, asyncio.Event] = {}

    def event(self, channel: Channel) -> asyncio.Event:
        return self._events.setdefault(channel, asyncio.Event())

    def wake(self, channels: Iterable[Channel]) -> None:
        for channel in channels:
            self.event(channel).set()

    async def wait(self, channel: Channel, seconds: float) -> None:
        """Until woken, or ``seconds`` at most (the poll that picks up work other
        processes put in a shared outbox)."""
        event = self.event(channel)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
        event.clear()


def backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter (attempt 1 waits up to ``base``)."""
    return random.uniform(0, min(cap, base * 2 ** min(max(attempt - 1, 0), 30)))  # noqa: S311 - jitter, not crypto


_OPEN_STATES = (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.UNKNOWN)
NOT_IN_GROUP = "the wallet is not in the conversation's group"


@dataclass(slots=True)
class _ChatLane:
    """One conversation's messages, posted in order by their own task."""

    queue: deque[DeliveryJob] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    group_id: str | None = None  # resolved by the lane's first post


class ChatDeliveryWorker:
    """Posts messages into their conversation's XMTP group: once per message, however
    many wallets it has, creating the group on first use.

    Each conversation has a lane: its messages go out in order, while conversations go
    out side by side (libxmtp serialises sends within a group, not across). Jobs reach
    the lanes two ways: claimed at birth by the relay (``take``: no claim transaction and
    no wake-up on the way) or claimed here from the outbox (retries, other processes'
    work, abandoned sends). Lanes never wait for each other, and the claim loop never
    waits for the lanes. What the lanes posted is marked sent in one transaction per
    flush (group commit); a crash before it leaves the rows leased, and their retry
    publishes the same prepared messages (keyed sends), never a second copy.
    """

    def __init__(self, store: Store, chat: ChatNetwork, relay: Relay, clock: Clock,
                 metrics: Metrics, waker: Waker, *, poll_seconds: float = 1.0,
                 lease_seconds: float = 120.0, batch: int = 50, max_attempts: int = 10,
                 reconcile_seconds: float = 10.0, max_held: int = 1000,
                 send_timeout: float = 30.0) -> None:
        self._store = store
        self._chat = chat
        self._relay = relay
        self._clock = clock
        self._metrics = metrics
        self._waker = waker
        self._poll = poll_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._batch = batch
        self._max_attempts = max_attempts
        self._reconcile_every = timedelta(seconds=reconcile_seconds)
        self._next_reconcile: datetime | None = None  # None: at the first run
        # Held in lanes at most (a backlog stays in the outbox, claimed as lanes drain),
        # well inside the lease: a lane posts about a hundred messages a second.
        self._max_held = max_held
        self._send_timeout = send_timeout
        self._lanes: dict[ConversationId, _ChatLane] = {}
        self._held: set[MessageId] = set()  # messages in lanes: each is posted once
        self._posted: list[tuple[DeliveryJob, str]] = []  # awaiting their mark
        self._flush_wanted = asyncio.Event()
        self._running = False

    # ---- DeliveryTaker ------------------------------------------------------------------

    def lease_for(self, target: Participant, now: datetime) -> datetime | None:
        if not self._running or len(self._held) >= self._max_held:
            return None
        return now + self._lease

    def take(self, job: DeliveryJob, lease_until: datetime) -> None:
        self._accept([job])

    # ---- running ------------------------------------------------------------------------

    async def run(self) -> None:
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._claim_loop())
                group.create_task(self._flush_loop())
        finally:
            self._running = False
            await self._stop_lanes()

    async def run_once(self) -> int:
        """Claims one batch, waits until the lanes have posted it and marks it; returns
        how many deliveries were claimed."""
        claimed = await self._claim()
        await self.drain()
        return claimed

    async def drain(self) -> None:
        """Waits until every lane is idle and what they posted is marked."""
        while tasks := [lane.task for lane in self._lanes.values() if lane.task]:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush()

    async def _claim_loop(self) -> None:
        while True:
            try:
                claimed = await self._claim()
            except Exception:  # a worker must outlive one bad batch; it is counted and logged
                self._metrics.worker_errors.labels("chat_delivery").inc()
                log.exception("claiming XMTP deliveries failed")
                claimed = 0
            if claimed < self._batch or len(self._held) >= self._max_held:
                await self._waker.wait(Channel.XMTP, self._poll)

    async def _claim(self) -> int:
        now = self._clock.now()
        room = min(self._batch, self._max_held - len(self._held))
        if room <= 0:
            return 0
        reconcile = self._next_reconcile is None or now >= self._next_reconcile
        async with self._store.transaction() as tx:
            jobs: list[DeliveryJob] = []
            if reconcile:
                # Sends a dead worker left unfinished: posting them again with the same key
                # publishes the message libxmtp already prepared, not a second copy. Looked
                # for now and then (a lease runs out in minutes), not on every wake.
                self._next_reconcile = now + self._reconcile_every
                jobs += await tx.claim_reconcilable([Channel.XMTP], now=now,
                                                    lease_until=now + self._lease, limit=room)
            jobs += await tx.claim_deliveries([Channel.XMTP], now=now,
                                              lease_until=now + self._lease,
                                              limit=room - len(jobs))
        self._accept(jobs)  # only once the claim has committed
        return len(jobs)

    def _accept(self, jobs: Iterable[DeliveryJob]) -> None:
        for job in jobs:
            if job.message.id in self._held:
                continue  # another wallet's delivery of a message already in its lane
            self._held.add(job.message.id)
            lane = self._lanes.get(job.conversation.id)
            if lane is None:
                lane = self._lanes[job.conversation.id] = _ChatLane()
            lane.queue.append(job)
            if lane.task is None:
                lane.task = asyncio.get_running_loop().create_task(
                    self._work_lane(job.conversation.id, lane))

    async def _work_lane(self, conversation_id: ConversationId, lane: _ChatLane) -> None:
        try:
            while lane.queue:
                job = lane.queue.popleft()
                try:
                    await self._deliver(lane, job)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the row stays leased; the reconciler posts it again
                    self._metrics.worker_errors.labels("chat_delivery").inc()
                    log.exception("XMTP delivery %s failed unexpectedly", job.delivery.id)
                finally:
                    self._held.discard(job.message.id)
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(conversation_id) is lane:
                del self._lanes[conversation_id]

    async def _deliver(self, lane: _ChatLane, job: DeliveryJob) -> None:
        try:
            # The job's snapshot of the conversation may predate the group the lane's
            # first message just created: resolved once per lane.
            lane.group_id = lane.group_id or await self._group_of(job)
            async with asyncio.timeout(self._send_timeout):
                message_id = await self._chat.send(
                    lane.group_id, self._relay.text_for_wallets(job), key=job.message.id)
        except WalletNotReachable as exc:
            # The group cannot be made: every message waiting in this lane fails the same
            # way, and the phone is told once, not once per message.
            failed = [job, *lane.queue]
            lane.queue.clear()
            for other in failed[1:]:
                self._held.discard(other.message.id)
            await self._fail_messages(failed, str(exc))
            await self._relay.wallet_unreachable(job.conversation.id,
                                                 WalletAddress(exc.wallet))
            return
        except (ChatNetworkError, TimeoutError) as exc:
            # The node did not answer, or failed: the message may be prepared already,
            # and libxmtp publishes a prepared message once the node answers again. So it
            # is retried (the same prepared message: a keyed send) as long as it takes,
            # never marked failed while it may still arrive.
            await self._retry_or_fail(job, str(exc) or "the XMTP send timed out",
                                      give_up=False)
            return
        except GatewayError as exc:
            await self._retry_or_fail(job, str(exc))
            return
        self._posted.append((job, message_id))
        self._flush_wanted.set()

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted.clear()
            try:
                await self._flush()
                failures = 0
            except Exception:  # kept for the next flush; the rows stay leased meanwhile
                failures += 1
                self._metrics.worker_errors.labels("chat_delivery").inc()
                log.exception("marking posted XMTP deliveries failed")
                await asyncio.sleep(backoff(failures, base=0.2, cap=5.0))
                self._flush_wanted.set()

    async def _flush(self) -> None:
        """One transaction marks everything posted since the last flush."""
        posted, self._posted = self._posted, []
        if not posted:
            return
        now = self._clock.now()
        left_out = 0
        try:
            async with self._store.transaction() as tx:
                gone: dict[ConversationId, set[ParticipantId]] = {}
                for job, message_id in posted:
                    if job.conversation.id not in gone:
                        gone[job.conversation.id] = {
                            p.id for p in await tx.list_participants(job.conversation.id,
                                                                     include_left=True)
                            if not p.active}
                    for delivery in await self._open_deliveries(tx, job):
                        if delivery.participant_id in gone[job.conversation.id]:
                            # not in the group the message was posted to
                            await tx.mark_failed(delivery.id, error_code=None, now=now,
                                                 error_message=NOT_IN_GROUP)
                            left_out += 1
                        else:
                            await tx.mark_sent(delivery.id, provider_id=message_id, now=now)
        except BaseException:
            self._posted[:0] = posted
            raise
        if left_out:
            self._metrics.deliveries.labels(Channel.XMTP.value, "failed").inc(left_out)
        for job, _ in posted:
            self._metrics.deliveries.labels(Channel.XMTP.value, "sent").inc()
            self._metrics.delivery_latency.labels(Channel.XMTP.value).observe(
                (now - job.message.created_at).total_seconds())

    async def _stop_lanes(self) -> None:
        """Cancels the lanes; marks what they posted and hands back what they had not
        started, so another worker can take it at once rather than after the lease."""
        waiting = [job for lane in self._lanes.values() for job in lane.queue]
        for lane in self._lanes.values():
            lane.queue.clear()
            if lane.task:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self._lanes.values() if lane.task),
                             return_exceptions=True)
        self._lanes.clear()
        self._held.clear()
        try:
            async with asyncio.timeout(5):
                await self._flush()
                if waiting:
                    now = self._clock.now()
                    async with self._store.transaction() as tx:
                        for job in waiting:
                            for delivery in await self._open_deliveries(tx, job):
                                await tx.mark_retry(delivery.id, next_attempt_at=now,
                                                    error_code=None, error_message=None,
                                                    now=now)
        except Exception:  # shutting down: the leases run out and the reconciler acts
            log.warning("could not settle %d posted and %d waiting XMTP deliveries on stop",
                        len(self._posted), len(waiting), exc_info=True)

    async def _group_of(self, job: DeliveryJob) -> str:
        if job.conversation.xmtp_group_id:  # set once, never changed
            return job.conversation.xmtp_group_id
        async with self._store.transaction() as tx:
            conversation = await tx.get_conversation(job.conversation.id)
            if conversation is not None and conversation.xmtp_group_id:
                return conversation.xmtp_group_id
            members = [p.identity for p in await tx.list_participants(job.conversation.id)
                       if p.identity is not None]
        group_id, left_out = await self._create_group(job.conversation.friendly_name or "",
                                                      members)
        try:
            async with self._store.transaction() as tx:
                await tx.set_conversation_group(job.conversation.id, group_id)
        except Conflict:
            # Another process (or the API) stored a group for it meanwhile: that one is the
            # conversation's; the one made here stays empty.
            async with self._store.transaction() as tx:
                conversation = await tx.get_conversation(job.conversation.id)
            if conversation is None or conversation.xmtp_group_id is None:
                raise
            log.info("conversation %s got its group elsewhere; using it", job.conversation.id)
            return conversation.xmtp_group_id
        if left_out:  # once the group is the conversation's: the notices go into it
            await self._relay.wallets_left_out(job.conversation.id, left_out)
        return group_id

    async def _create_group(self, name: str, members: Sequence[WalletAddress],
                            ) -> tuple[str, list[WalletAddress]]:
        """The group with every member on XMTP; those who are not are left out (and
        returned). Raises ``WalletNotReachable`` when none is."""
        left_out: list[WalletAddress] = []
        while True:
            joining = [m for m in members if m not in left_out]
            try:
                return await self._chat.create_group(name=name, members=joining), left_out
            except WalletNotReachable as exc:
                if len(joining) <= 1 or WalletAddress(exc.wallet) not in joining:
                    raise
                left_out.append(WalletAddress(exc.wallet))

    async def _open_deliveries(self, tx: StoreTx, job: DeliveryJob) -> list[Delivery]:
        """This message's XMTP deliveries not yet done: one post into the group covers
        every wallet in it."""
        return [d for d in await tx.list_deliveries(job.message.id)
                if d.channel is Channel.XMTP
                and d.state in _OPEN_STATES]

    async def _fail_messages(self, jobs: Sequence[DeliveryJob], reason: str) -> None:
        now = self._clock.now()
        async with self._store.transaction() as tx:
            for job in jobs:
                for delivery in await self._open_deliveries(tx, job):
                    await tx.mark_failed(delivery.id, error_code=None, error_message=reason,
                                         now=now)
                    self._metrics.deliveries.labels(Channel.XMTP.value, "failed").inc()

    async def _retry_or_fail(self, job: DeliveryJob, reason: str, *,
                             give_up: bool = True) -> None:
        attempts = job.delivery.attempts
        if give_up and attempts >= self._max_attempts:
            log.error("giving up on XMTP delivery %s: %s", job.delivery.id, reason)
            await self._fail_messages([job], reason)
            return
        now = self._clock.now()
        delay = timedelta(seconds=backoff(attempts))
        if attempts % self._max_attempts == 0:  # loud now and then, not on every retry
            log.error("XMTP delivery %s still failing after %d attempts (%s); retrying "
                      "until the node answers", job.delivery.id, attempts, reason)
        else:
            log.warning("XMTP delivery %s failed (%s); retrying in %.1fs", job.delivery.id,
                        reason, delay.total_seconds())
        async with self._store.transaction() as tx:
            for delivery in await self._open_deliveries(tx, job):
                await tx.mark_retry(delivery.id, next_attempt_at=now + delay, error_code=None,
                                    error_message=reason, now=now)


LEAVE_REQUEST = "leave_request"  # the content type a wallet sends when it leaves a group
LEFT_NOTICE = "{wallet} has left this conversation; your texts no longer reach them."


class Departures:
    """A wallet that blocks a conversation (consent denied) and leaves its group.

    XMTP consent is private to the wallet's inbox: the gateway cannot read it. What it
    does see is the leave request the wallet's app sends into the group (libxmtp then
    removes the member). The wallet's participant gets consent ``denied`` — the relay
    stops posting for it — and the phone is told, once: a repeated leave request (a
    catch-up after a restart) finds the consent already denied.
    """

    def __init__(self, store: Store, clock: Clock,
                 wake: Callable[[set[Channel]], None]) -> None:
        self._store = store
        self._clock = clock
        self._wake = wake

    async def wallet_left(self, chat: ChatMessage) -> bool:
        woken: set[Channel] = set()
        async with self._store.transaction() as tx:
            conversation = await tx.get_conversation_by_group(chat.group_id)
            if conversation is None:
                return False
            await tx.set_cursor(chat.group_id, chat.sent_at_ns)
            participants = await tx.list_participants(conversation.id)
            wallet = next((p for p in participants if p.identity == chat.sender), None)
            if wallet is None or wallet.consent is Consent.DENIED:
                return False
            await tx.set_participant_consent(wallet.id, Consent.DENIED)
            now = self._clock.now()
            notice = await tx.add_message(NewMessage(
                conversation_id=conversation.id, author=None,
                body=LEFT_NOTICE.format(wallet=short_address(chat.sender)),
                source=MessageSource.SYSTEM), now=now)
            for phone in participants:
                if not phone.is_chat and phone.consent is not Consent.DENIED:
                    await tx.add_delivery(notice.id, phone.id, phone.channel, now=now)
                    woken.add(phone.channel)
        log.info("wallet %s left conversation %s", short_address(chat.sender),
                 conversation.id)
        self._wake(woken)
        return True


class ChatStreamConsumer:
    """Feeds every wallet message to the relay. The ChatNetwork catches up from the
    stored high-water marks before it streams, so downtime loses nothing; when the stream
    fails it is opened again after a backoff (counted, logged, never swallowed)."""

    def __init__(self, store: Store, chat: ChatNetwork, relay: Relay, metrics: Metrics, *,
                 departures: Departures | None = None, max_backoff: float = 30.0,
                 leadership: Callable[[], AbstractAsyncContextManager[None]] | None = None,
                 ) -> None:
        self._store = store
        self._leadership = leadership
        self._chat = chat
        self._relay = relay
        self._metrics = metrics
        self._departures = departures
        self._max_backoff = max_backoff

    async def high_water(self, group_id: str) -> int | None:
        async with self._store.transaction() as tx:
            return await tx.get_cursor(group_id)

    async def run(self) -> None:
        """Streams while this process leads (several processes may share one database;
        the others wait to take over). Losing or failing to take the lead (a database
        blip) is retried like a stream failure: the consumer never just ends."""
        failures = 0
        while True:
            try:
                async with (self._leadership() if self._leadership
                            else contextlib.nullcontext()):
                    failures = 0
                    await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:  # counted and logged; the lead is sought again
                failures += 1
                self._metrics.stream_failures.inc()
                delay = backoff(failures, base=0.5, cap=self._max_backoff)
                log.exception("chat stream leadership failed; trying again in %.1fs", delay)
                await asyncio.sleep(delay)

    async def _consume(self) -> None:
        failures = 0
        while True:
            try:
                async for message in self._chat.messages(self.high_water):
                    if message.content_type == LEAVE_REQUEST and self._departures:
                        told = await self._departures.wallet_left(message)
                        self._metrics.inbound.labels("xmtp", "left" if told else "duplicate").inc()
                        continue
                    outcome = await self._relay.receive_chat_message(message)
                    self._metrics.inbound.labels("xmtp", outcome.value).inc()
                    failures = 0
                raise GatewayError("the chat stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream must come back; counted and logged
                failures += 1
                self._metrics.stream_failures.inc()
                delay = backoff(failures, base=0.5, cap=self._max_backoff)
                # the trace once per outage: the reopens after it say one line each
                log.error("chat stream failed (%d in a row): %s; reopening in %.1fs",
                          failures, first_line(exc), delay, exc_info=failures == 1)
                await asyncio.sleep(delay)
