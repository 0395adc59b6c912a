"""The outbox engine: takes due deliveries of one channel and sends them through that
channel's strategy (``DeliveryChannel``), one engine class for every channel.

Lanes
    A lane is an order key (``DeliveryJob.lane``: a phone's texts, a conversation's posts
    into its group). Each lane held here is worked by its own task, its jobs in position
    order; lanes go side by side. When a lane's delivery is not done (a retry, an unknown
    outcome, handed back), the jobs queued behind it are handed back too, untried: the
    store then holds them until it is done, so nothing overtakes it.

Claims
    Deliveries reach the lanes claimed at birth (the relay creates them leased to this
    engine and hands them over after its commit: ``lease_for``/``take``) or claimed here
    from the outbox (retries, another process's work, what waited for order). The claim
    loop sleeps until it is woken (new work), the soonest retry falls due, or its poll
    interval passes (work another process put in a shared outbox).

Pacing
    A budget per sender key (``channel.sender_of``), here and not in the channel: a token
    bucket per number, a rolling-window budget per XMTP client (``pacing``).
    A lane holds a sender's work only as long as it can send it well inside the lease;
    beyond that, jobs are handed back due when the sender will have room.

Leases and results
    Every result is written by the relay under the lease (and its fencing token) it was
    claimed with, in one transaction per flush (group commit). A send starts only while
    both its lease and this process's heartbeat (``Holder``) will outlast it; a result
    whose lease another claim took is dropped, never written over the new owner's.

Reconciling
    Deliveries whose outcome is unknown (a timeout after the request left, a process
    that died holding them) are claimed for reconciling — at once when their holder is
    known to be dead — and given to the channel, which looks them up (phone) or posts
    them again under the same key (chat); never blindly sent again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from gateway.delivery.backoff import Backoff
from gateway.delivery.channel import Attempt, DeliveryChannel, PacedOut
from gateway.delivery.holder import Holder
from gateway.delivery.pacing import Pacer, PacingSettings
from gateway.domain.clock import Clock
from gateway.domain.models import Channel, DeliveryJob, Participant
from gateway.domain.outcomes import Failed, HandBack, Outcome, Retry, Sent, Unknown
from gateway.domain.ports import LeaseOffer
from gateway.errors import StoreError

log = logging.getLogger(__name__)

Observer = Callable[[str, DeliveryJob | None], None]
"""Told each outcome ("sent", "retry", "failed", "refused", "unknown", "handed_back",
"late" (a result dropped because its lease was taken), "error") with its job."""


class Ledger(Protocol):
    """What the engine needs of the relay (the one writer): claims and results."""

    async def claim(self, channels: Sequence[Channel], *, holder: str,
                    lease_until: datetime, limit: int,
                    ) -> tuple[list[DeliveryJob], datetime | None]: ...
    async def reclaim(self, channels: Sequence[Channel], *, holder: str,
                      lease_until: datetime, limit: int) -> list[DeliveryJob]: ...
    async def settle(self, results: Sequence[tuple[DeliveryJob, Outcome]]) -> list[bool]: ...
    async def renew(self, job: DeliveryJob, until: datetime) -> DeliveryJob | None: ...


class LeaseLost(Exception):
    """The delivery's lease could not be extended: another claim holds it now."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    lease: float = 120.0  # seconds a claim holds a delivery
    send_timeout: float = 15.0  # the longest one send may take
    # Room left between the end of a send and the end of its lease, so the reconciler
    # never takes a row while this engine may still write to it.
    lease_margin: float = 5.0
    batch_size: int = 50
    poll_interval: float = 2.0  # the longest sleep between looks at a shared outbox
    reconcile_interval: float = 10.0
    max_held: int = 1000  # jobs held in lanes at most; a backlog stays in the outbox
    backoff: Backoff = field(default_factory=Backoff)
    pacing: PacingSettings = field(default_factory=PacingSettings)


@dataclass(slots=True)
class _Lane:
    queue: list[DeliveryJob] = field(default_factory=list)  # by position
    task: asyncio.Task[None] | None = None

    def add(self, job: DeliveryJob) -> None:
        keys = [j.position for j in self.queue]
        self.queue.insert(bisect.bisect_right(keys, job.position), job)


class Outbox:
    def __init__(self, ledger: Ledger, channel: DeliveryChannel, holder: Holder,
                 clock: Clock, settings: EngineSettings, *,
                 observer: Observer | None = None, pacer: Pacer | None = None) -> None:
        """``pacer``: the senders' budgets, when others share them (the API's XMTP writes
        count against the same client's budget); else the engine's own."""
        self._ledger = ledger
        self._channel = channel
        self._holder = holder
        self._clock = clock
        self._settings = settings
        self._observer = observer
        self._pacer = pacer if pacer is not None else Pacer(settings.pacing)
        self._lease = timedelta(seconds=settings.lease)
        self._lanes: dict[str, _Lane] = {}
        self._held: set[str] = set()  # what the lanes hold: see _held_key
        self._settles: dict[str, float] = {}  # reconciling delivery -> loop time to wait for
        # Per lane, results that leave a delivery open (a retry, a hand-back, an unknown):
        # [position, when written (a tick of _ticks), None while not yet]. Until one is
        # written, and while a claim that began before it was written is under way, the
        # store may show that delivery as this process's and give the claim a later one
        # of its lane, which must then wait its turn too.
        self._reopening: dict[str, list[list[int | None]]] = {}
        self._ticks = itertools.count()
        self._offers: dict[int, int] = {}  # offers not yet taken or released, by mark
        self._waiting: dict[str, int] = {}  # jobs held per sender, not yet sent
        self._results: list[tuple[DeliveryJob, Outcome]] = []
        self._flush_wanted = asyncio.Event()
        self._flushed = asyncio.Event()
        self._wake = asyncio.Event()
        self._next_due: datetime | None = None
        self._running = False
        self._halted = False

    @property
    def name(self) -> str:
        return self._channel.name

    # ---- DeliveryTaker ------------------------------------------------------------------

    def lease_for(self, target: Participant, now: datetime) -> LeaseOffer | None:
        if not self._running or len(self._held) >= self._settings.max_held:
            return None
        if self._holder.lapsed(self._settings.lease_margin):
            return None
        mark = next(self._ticks)
        self._offers[mark] = self._offers.get(mark, 0) + 1
        return LeaseOffer(self._holder.id, now + self._lease, mark)

    def take(self, job: DeliveryJob, offer: LeaseOffer) -> None:
        self.release(offer)
        # the birth's transaction looked at its lane after the offer: what was written
        # before then it saw, what was written after may have passed it by
        self._accept([job], began=offer.mark)

    def release(self, offer: LeaseOffer) -> None:
        left = self._offers.get(offer.mark, 0) - 1
        if left > 0:
            self._offers[offer.mark] = left
        else:
            self._offers.pop(offer.mark, None)

    # ---- running ------------------------------------------------------------------------

    def wake(self) -> None:
        """New work is in the outbox: claim now instead of at the next poll."""
        self._wake.set()

    def halt(self) -> None:
        """Stops as a killed process would: from now on nothing is written, not even
        what was finished (a test's SIGKILL; cancel ``run`` after it)."""
        self._halted = True
        self._running = False

    async def run(self) -> None:
        """Claims, reconciles and writes results until cancelled."""
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._claim_loop())
                group.create_task(self._reconcile_loop())
                group.create_task(self._flush_loop())
        finally:
            self._running = False
            await self._stop_lanes()

    async def run_once(self) -> int:
        """Claims one batch, waits until the lanes are done with it and its results are
        written; returns how many deliveries were claimed."""
        claimed = await self._claim()
        await self.drain()
        return claimed

    async def reconcile_once(self) -> int:
        """Reconciles one batch to the end (as ``run_once``); returns how many."""
        found = await self._reconcile()
        await self.drain()
        return found

    async def drain(self) -> None:
        """Waits until every lane is idle and every result is written."""
        while tasks := [lane.task for lane in self._lanes.values() if lane.task]:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush()

    async def _claim_loop(self) -> None:
        while True:
            try:
                claimed = await self._claim()
            except Exception:  # the database is away, say: counted, logged, tried again
                log.exception("claiming %s deliveries failed", self.name)
                self._observe("error", None)
                claimed = 0
            if claimed and len(self._held) < self._settings.max_held:
                continue  # more may be due behind what was just claimed (lane order)
            await self._sleep()

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                found = await self._reconcile()
            except Exception:  # counted, logged, tried again at the next interval
                log.exception("reconciling %s deliveries failed", self.name)
                self._observe("error", None)
                found = 0
            if found < self._settings.batch_size:
                await asyncio.sleep(self._settings.reconcile_interval)

    async def _reconcile(self) -> int:
        room = min(self._settings.max_held - len(self._held), self._settings.batch_size)
        if room <= 0:
            return 0
        if self._holder.lapsed(self._settings.lease_margin):
            await self._holder.beat()
        # the lease covers the wait for the provider to settle as well as the lookup
        settle = timedelta(seconds=self._channel.reconcile_settle)
        jobs = await self._ledger.reclaim(
            self._channel.channels, holder=self._holder.id,
            lease_until=self._clock.now() + settle + self._lease, limit=room)
        if jobs:
            log.info("reconciling %d %s deliveries", len(jobs), self.name)
            # into their lanes at once, so what comes after them waits behind them; each
            # lets its request settle at the provider before it is looked at (_attempt)
            settled = asyncio.get_running_loop().time() + self._channel.reconcile_settle
            for job in jobs:
                self._settles[job.delivery.id] = settled
            self._accept([replace(job, reconciling=True) for job in jobs])
        return len(jobs)

    async def _sleep(self) -> None:
        timeout = self._settings.poll_interval
        # full, a due time changes nothing until a result frees room, and that wakes it
        if self._next_due is not None and len(self._held) < self._settings.max_held:
            until_due = (self._next_due - self._clock.now()).total_seconds()
            timeout = min(timeout, max(until_due, 0.01))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    async def _claim(self) -> int:
        room = self._settings.max_held - len(self._held)
        if room <= 0:
            return 0
        if self._holder.lapsed(self._settings.lease_margin):
            await self._holder.beat()
        now = self._clock.now()
        began = next(self._ticks)
        self._forget_reopened(began)
        fresh, self._next_due = await self._ledger.claim(
            self._channel.channels, holder=self._holder.id,
            lease_until=now + self._lease, limit=min(room, self._settings.batch_size))
        self._accept(fresh, began=began)
        return len(fresh)

    def _accept(self, jobs: Sequence[DeliveryJob], *, began: int | None = None) -> None:
        """Into their lanes. ``began``: the mark before the claim (or the birth) that gave
        them looked at the store (None: reconciling, which is not held back)."""
        for job in jobs:
            if self._held_key(job) in self._held:
                continue  # another wallet's delivery of a message already in its lane
            sender = self._channel.sender_of(job)
            if not job.reconciling and self._behind_reopened(job, began):
                self._result(job, HandBack(self._clock.now()))
                continue
            if not job.reconciling and not self._has_room(sender):
                self._result(job, HandBack(self._clock.now() + timedelta(
                    seconds=self._backlog_seconds(sender))))
                continue
            self._held.add(self._held_key(job))
            self._waiting[sender] = self._waiting.get(sender, 0) + 1
            lane = self._lanes.get(job.lane)
            if lane is None:
                lane = self._lanes[job.lane] = _Lane()
            lane.add(job)
            if lane.task is None:
                lane.task = asyncio.get_running_loop().create_task(
                    self._work_lane(job.lane, lane), name=f"{self.name}-lane")

    def _behind_reopened(self, job: DeliveryJob, began: int | None) -> bool:
        """Whether an earlier delivery of the job's lane is going back to the outbox and
        the claim that gave this job may have seen it as still held here (its result was
        not written when the claim began)."""
        return any(position is not None and position < job.position
                   and (written is None or began is None or written > began)
                   for position, written in self._reopening.get(job.lane, ()))

    def _held_key(self, job: DeliveryJob) -> str:
        """A message, when one send covers all its deliveries (it is held once); else the
        delivery."""
        return job.message.id if self._channel.one_send_per_message else job.delivery.id

    def _has_room(self, sender: str) -> bool:
        """Whether the sender can send one more well inside a lease (half of it, less a
        send's timeout), at its pace."""
        bucket = self._pacer.bucket(sender)
        if bucket is None:
            return True
        budget = self._settings.lease / 2 - self._settings.send_timeout
        return self._waiting.get(sender, 0) < max(1, int(bucket.rate * budget))

    def _backlog_seconds(self, sender: str) -> float:
        bucket = self._pacer.bucket(sender)
        return bucket.backlog_seconds(self._waiting.get(sender, 0)) if bucket else 0.0

    # ---- lanes --------------------------------------------------------------------------

    async def _work_lane(self, key: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                job = lane.queue.pop(0)
                sender = self._channel.sender_of(job)
                try:
                    # cancelled mid-send (a stop), it stays leased: its outcome is unknown
                    outcome = await self._attempt(job, sender)
                finally:
                    self._waiting[sender] = self._waiting.get(sender, 1) - 1
                    self._held.discard(self._held_key(job))
                if outcome is None:  # its lease is gone: the reconciler has it
                    self._hand_back_lane(lane)
                    continue
                self._result(job, outcome)
                if isinstance(outcome, Failed) and outcome.whole_lane:
                    self._drop(lane)  # the relay fails the whole lane with this result
                elif not isinstance(outcome, (Sent, Failed)):
                    # not done: what waits behind it must not overtake it
                    self._hand_back_lane(lane)
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]

    def _drop(self, lane: _Lane) -> list[DeliveryJob]:
        dropped, lane.queue = lane.queue, []
        for job in dropped:
            self._held.discard(self._held_key(job))
            self._settles.pop(job.delivery.id, None)
            sender = self._channel.sender_of(job)
            self._waiting[sender] = self._waiting.get(sender, 1) - 1
        return dropped

    def _hand_back_lane(self, lane: _Lane) -> None:
        """What waits in the lane goes back to the outbox, untried: the store holds it
        until the lane's earlier delivery is done (a hand-back whose lease was lost
        meanwhile is dropped). Deliveries being reconciled stay: a lookup sends nothing,
        so it needs no turn, and one that finds nothing is due again in order."""
        now = self._clock.now()
        keep = [job for job in lane.queue if job.reconciling]
        lane.queue = [job for job in lane.queue if not job.reconciling]
        for job in self._drop(lane):
            self._result(job, self._untried(job, now))
        lane.queue = keep

    def _untried(self, job: DeliveryJob, due: datetime) -> Outcome:
        """A job not tried this time goes back to the outbox, due at ``due``, without using
        up an attempt — unless it was claimed for reconciling: an earlier attempt's
        outcome is still unknown, and handed back as untried it would be sent again
        blindly. It stays unknown, for the reconciler."""
        if job.reconciling:
            return Unknown("not looked up yet")
        return HandBack(due)

    async def _attempt(self, job: DeliveryJob, sender: str) -> Outcome | None:
        """One go at ``job``; None when its lease turned out to be lost."""
        settle = self._settles.pop(job.delivery.id, None)
        if settle is not None and (wait := settle - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(wait)
        lease = job.lease
        assert lease is not None, "the engine sends only claimed deliveries"
        need = self._settings.send_timeout + self._settings.lease_margin
        if self._holder.lapsed(need):
            # This process's heartbeat ran out (its database was away): others may have
            # taken what it holds. Beat again, and keep the job only if it is still ours.
            await self._holder.beat()
            renewed = await self._ledger.renew(job, self._clock.now() + self._lease)
            if renewed is None:
                self._observe("late", job)
                return None
            job = renewed
            assert job.lease is not None
            lease = job.lease
        if self._clock.now() + timedelta(seconds=need) >= lease.until:
            return self._untried(job, self._clock.now())  # too little lease left to start

        started = False  # the channel had its turn: a send may be under way from here

        async def pace(sends: int, calls: int | None = None) -> Sequence[float]:
            nonlocal started
            gaps = await self._pace(job, sender, sends, sends if calls is None else calls)
            started = True
            return gaps

        def pause(seconds: float) -> None:
            bucket = self._pacer.bucket(sender)
            if bucket is not None:
                bucket.pause(seconds)

        attempt = Attempt(job=job, pace=pace, pause=pause)
        try:
            outcome = await self._channel.deliver(attempt)
        except PacedOut as exc:
            return self._untried(job, self._clock.now() + timedelta(seconds=exc.due_in))
        except LeaseLost:  # another claim took it while it waited its turn: theirs now
            self._observe("late", job)
            return None
        except asyncio.CancelledError:
            if not started:  # stopped while it waited for its turn: untried, handed back
                self._result(job, self._untried(job, self._clock.now()))
            raise
        except Exception:
            # A bug or a store error mid-delivery: whether it went out is not known, so
            # it is reconciled, never sent again blindly.
            log.exception("%s delivery %s failed unexpectedly", self.name, job.delivery.id)
            self._observe("error", job)
            return Unknown("failed unexpectedly")
        return self._retry_policy(job, outcome)

    async def _pace(self, job: DeliveryJob, sender: str, sends: int,
                    calls: int) -> list[float]:
        """Waits for the first of ``sends`` turns of ``sender`` and returns the gaps to
        the later ones. The first turn must come while the lease still has room for a
        call (else ``PacedOut``: handed back, due at that turn); the rest of the turns
        and every call (each up to the send timeout) must end inside the lease, which
        is extended when they would not (a message of several posts or parts may need
        longer than one lease; never so long that it could not start)."""
        assert job.lease is not None
        lease_until = job.lease.until
        bucket = self._pacer.bucket(sender)
        if bucket is None:
            return [0.0] * sends
        waits = [bucket.reserve() for _ in range(sends)]
        one_call = self._settings.send_timeout + self._settings.lease_margin
        if self._clock.now() + timedelta(seconds=waits[0] + one_call) >= lease_until:
            for _ in waits:
                bucket.cancel()
            raise PacedOut(waits[0])
        if waits[0] > 0:
            await asyncio.sleep(waits[0])
        # a pause that began while this one waited its turn (another lane's 429) holds it
        # too: the whole sender is paused
        while (paused := bucket.paused_for()) > 0:
            if self._clock.now() + timedelta(seconds=one_call + paused) >= lease_until:
                raise PacedOut(paused)
            await asyncio.sleep(paused)
        rest = (waits[-1] - waits[0] + self._settings.send_timeout * calls
                + self._settings.lease_margin)
        until = self._clock.now() + timedelta(seconds=rest)
        if until >= lease_until and await self._ledger.renew(job, until + self._lease) is None:
            raise LeaseLost
        return [max(later - earlier, 0.0) for earlier, later in itertools.pairwise(waits)]

    def _retry_policy(self, job: DeliveryJob, outcome: Outcome) -> Outcome:
        """A retry gets its due time from the backoff, or fails once attempts are spent."""
        if not isinstance(outcome, Retry):
            return outcome
        attempts = job.delivery.attempts
        backoff = self._settings.backoff
        if backoff.exhausted(attempts) and not outcome.forever:
            return Failed(f"gave up after {attempts} attempts: {outcome.reason}", outcome.code)
        if outcome.forever and attempts % backoff.max_attempts == 0:
            log.error("%s delivery %s still failing after %d attempts (%s); retrying",
                      self.name, job.delivery.id, attempts, outcome.reason)
        if outcome.retry_after:
            self._pause_sender(job, outcome.retry_after)
        delay = 0.0 if outcome.at_once else backoff.delay(
            attempts, at_least=outcome.retry_after or 0.0)
        due = self._clock.now() + timedelta(seconds=delay)
        log.info("%s delivery %s: retry in %.1fs (%s)", self.name, job.delivery.id, delay,
                 outcome.reason)
        return replace(outcome, due=due)

    def _pause_sender(self, job: DeliveryJob, seconds: float) -> None:
        bucket = self._pacer.bucket(self._channel.sender_of(job))
        if bucket is not None:
            bucket.pause(seconds)

    # ---- results --------------------------------------------------------------------------

    def _result(self, job: DeliveryJob, outcome: Outcome) -> None:
        if self._halted:
            return
        if not isinstance(outcome, (Sent, Failed)):
            self._reopening.setdefault(job.lane, []).append([job.position, None])
        self._results.append((job, outcome))
        self._flush_wanted.set()

    def _reopened(self, results: Sequence[tuple[DeliveryJob, Outcome]]) -> None:
        """These results are written (or dropped): from now on the store shows them."""
        tick = next(self._ticks)
        for job, outcome in results:
            if isinstance(outcome, (Sent, Failed)):
                continue
            for entry in self._reopening.get(job.lane, []):
                if entry[0] == job.position and entry[1] is None:
                    entry[1] = tick
                    break

    def _forget_reopened(self, before: int) -> None:
        """Drops what was written before ``before``: a claim beginning now sees it, and
        so did every birth whose offer is still out, if it was written before that."""
        if self._offers:
            before = min(before, min(self._offers))
        for lane in list(self._reopening):
            kept = [e for e in self._reopening[lane] if e[1] is None or e[1] >= before]
            if kept:
                self._reopening[lane] = kept
            else:
                del self._reopening[lane]

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
                self._observe("error", None)
                log.exception("writing %s delivery results failed", self.name)
                await asyncio.sleep(Backoff(base=0.2, cap=5.0).delay(failures))
                self._flush_wanted.set()

    async def _flush(self) -> None:
        """One transaction writes every result since the last flush. When it fails for
        another reason than the store (a bug), the results are written one by one, and
        one that still fails is dropped (logged): its row keeps its lease, and the
        reconciler settles it when that runs out, instead of it blocking every result
        after it."""
        results, self._results = self._results, []
        if not results or self._halted:
            return
        try:
            kept = await self._ledger.settle(results)
        except Exception as exc:
            if isinstance(exc, StoreError):
                self._results[:0] = results  # the database is away: tried again
                raise
            kept = await self._settle_one_by_one(results)
        except BaseException:
            self._results[:0] = results
            raise
        self._reopened([r for r in results if r not in self._results])
        self._after_flush(results, kept)

    async def _settle_one_by_one(
            self, results: Sequence[tuple[DeliveryJob, Outcome]]) -> list[bool]:
        kept = []
        for result in results:
            try:
                kept += await self._ledger.settle([result])
            except StoreError:
                self._results.append(result)
                kept.append(False)
            except Exception:
                log.exception("%s delivery %s: its result could not be written; dropped, "
                              "the reconciler settles it", self.name, result[0].delivery.id)
                self._observe("error", result[0])
                kept.append(False)
        return kept

    def _after_flush(self, results: Sequence[tuple[DeliveryJob, Outcome]],
                     kept: Sequence[bool]) -> None:
        for (job, outcome), written in zip(results, kept, strict=True):
            self._observe(_label(outcome) if written else "late", job)
            if written and isinstance(outcome, Retry) and outcome.due is not None:
                self._due_at(outcome.due)
        if results:
            # what waited behind them in their lanes may be due now, and the room they
            # held (an unknown outcome's too, and a lost lease's) may be claimed into
            self._wake.set()

    def _due_at(self, due: datetime) -> None:
        if self._next_due is None or due < self._next_due:
            self._next_due = due
            self._wake.set()  # the claim loop sleeps until then, not until its poll

    async def _stop_lanes(self) -> None:
        """Cancels the lanes; writes what they finished and hands back what they had not
        started, so another process can take it at once rather than after the lease."""
        waiting = [job for lane in self._lanes.values() for job in lane.queue]
        for lane in self._lanes.values():
            lane.queue.clear()
            if lane.task:
                lane.task.cancel()
        await asyncio.gather(*(lane.task for lane in self._lanes.values() if lane.task),
                             return_exceptions=True)
        waiting += [job for lane in self._lanes.values() for job in lane.queue]
        self._lanes.clear()
        self._held.clear()
        self._waiting.clear()
        now = self._clock.now()
        for job in waiting:
            self._result(job, self._untried(job, now))
        try:
            async with asyncio.timeout(5):
                await self._flush()
        except Exception:  # shutting down: the leases run out and the reconciler acts
            log.warning("could not settle %d %s deliveries on stop", len(self._results),
                        self.name, exc_info=True)

    def _observe(self, outcome: str, job: DeliveryJob | None) -> None:
        if self._observer is not None:
            self._observer(outcome, job)


def _label(outcome: Outcome) -> str:
    if isinstance(outcome, Sent):
        return "sent"
    if isinstance(outcome, Failed):
        return "refused" if outcome.refused else "failed"
    if isinstance(outcome, Retry):
        return "retry"
    if isinstance(outcome, Unknown):
        return "unknown"
    return "handed_back"
