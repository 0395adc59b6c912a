"""Store contract: the delivery outbox, claims, leases, status callbacks, reconciliation."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from gateway.domain.ids import DeliveryId, PhoneNumber
from gateway.domain.models import Channel, DeliveryJob, DeliveryState, Lease, MessageSource
from gateway.domain.ports import NewMessage, NewParticipant
from gateway.errors import LeaseLost, NotFound
from gateway.store import SqlStore
from gateway.store.tables import pending_statuses
from tests.contract.scenario import (
    HOLDER,
    LATER,
    NOW,
    OTHER_PHONE,
    OTHER_WALLET,
    PHONE,
    PROXY,
    OpenStore,
    Thread,
    deliver,
    thread,
    wallet_text,
)

LEASE = NOW + timedelta(seconds=30)
MISSING = DeliveryId("DY" + "0" * 32)


async def claim_jobs(store: SqlStore, *, now: datetime = NOW, limit: int = 10,
                     channels: tuple[Channel, ...] = (Channel.SMS,), holder: str = HOLDER,
                     lease_until: datetime = LEASE) -> list[DeliveryJob]:
    async with store.transaction() as tx:
        return await tx.claim_deliveries(channels, holder=holder, now=now,
                                         lease_until=lease_until, limit=limit)


async def claim(store: SqlStore, *, now: datetime = NOW, limit: int = 10,
                channels: tuple[Channel, ...] = (Channel.SMS,),
                holder: str = HOLDER) -> list[DeliveryId]:
    return [job.delivery.id
            for job in await claim_jobs(store, now=now, limit=limit, channels=channels,
                                        holder=holder)]


def lease_of(job: DeliveryJob) -> Lease:
    assert job.lease is not None
    return job.lease


async def state_of(store: SqlStore, delivery_id: DeliveryId) -> DeliveryState:
    async with store.transaction() as tx:
        delivery = await tx.get_delivery(delivery_id)
    assert delivery is not None
    return delivery.state


@pytest.fixture
async def on(store: SqlStore) -> Thread:
    async with store.transaction() as tx:
        # the claiming process is alive throughout (its leases run out only by time)
        await tx.beat(HOLDER, description="tests", now=NOW, alive_until=NOW + timedelta(days=1))
        return await thread(tx)


class TestOutbox:
    async def test_a_delivery_is_pending_until_claimed(self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message, delivery = await wallet_text(tx, on)
            assert await tx.get_delivery(delivery.id) == delivery
            assert await tx.list_deliveries(message.id) == [delivery]
            assert await tx.get_delivery(MISSING) is None
        assert delivery.state is DeliveryState.PENDING and delivery.attempts == 0
        assert delivery.participant_id == on.phone.id and delivery.channel is Channel.SMS

    async def test_a_claim_carries_everything_the_sender_needs(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message, delivery = await wallet_text(tx, on, "to the phone")
            jobs = await tx.claim_deliveries([Channel.SMS], holder=HOLDER, now=NOW,
                                             lease_until=LEASE,
                                             limit=10)
        [job] = jobs
        assert job.delivery.id == delivery.id and job.delivery.state is DeliveryState.SENDING
        assert job.delivery.attempts == 1
        assert job.message == message and job.message.body == "to the phone"
        assert job.target == on.phone and job.author == on.wallet
        assert job.conversation.id == on.conversation.id

    async def test_a_batch_comes_in_due_order_and_carries_notices_without_author(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            elsewhere = await thread(tx, phone=OTHER_PHONE, wallet=OTHER_WALLET)
            other = elsewhere.wallet
            notice = await tx.add_message(NewMessage(
                on.conversation.id, None, "a notice", MessageSource.SYSTEM), now=NOW)
            earlier = await tx.add_message(NewMessage(
                elsewhere.conversation.id, None, "an earlier notice", MessageSource.SYSTEM),
                now=NOW)
            to_wallet = await deliver(tx, notice, on.wallet,
                                      not_before=NOW - timedelta(seconds=1))
            to_other = await deliver(tx, earlier, other, not_before=NOW - timedelta(seconds=2))
            text, to_phone = await wallet_text(tx, on)
            jobs = await tx.claim_deliveries([Channel.SMS, Channel.XMTP], holder=HOLDER, now=NOW,
                                             lease_until=LEASE, limit=10)
        assert [job.delivery.id for job in jobs] == [to_other.id, to_wallet.id, to_phone.id]
        assert [job.target for job in jobs] == [other, on.wallet, on.phone]
        assert [job.message for job in jobs] == [earlier, notice, text]
        assert [job.author for job in jobs] == [None, None, on.wallet]
        assert [job.conversation.id for job in jobs] == [
            elsewhere.conversation.id, on.conversation.id, on.conversation.id]

    async def test_a_claimed_delivery_is_not_claimed_again(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            await wallet_text(tx, on)
        assert len(await claim(store)) == 1
        assert await claim(store) == []
        assert await claim(store, now=LEASE + timedelta(hours=1)) == []  # reconciler's job

    async def test_claims_respect_channel_due_time_and_limit(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message, _ = await wallet_text(tx, on)
            to_wallet = await deliver(tx, message, on.wallet)
            later = [(await wallet_text(tx, await thread(tx,
                                                         phone=PhoneNumber(f"+1555010090{n}"))))[1]
                     for n in range(3)]  # three phones: three lanes
            for delivery in later:
                await tx.mark_retry(delivery.id, next_attempt_at=LATER, error_code=None,
                                    error_message=None, now=NOW)
        assert await claim(store, channels=(Channel.XMTP,)) == [to_wallet.id]
        assert len(await claim(store, channels=(Channel.SMS, Channel.WHATSAPP))) == 1
        assert await claim(store) == []
        assert len(await claim(store, now=LATER, limit=2)) == 2
        assert len(await claim(store, now=LATER, limit=2)) == 1
        async with store.transaction() as tx:
            assert await tx.claim_deliveries([Channel.SMS], holder=HOLDER, now=LATER,
                                             lease_until=LEASE,
                                             limit=0) == []

    async def test_a_delivery_due_later_waits(self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message, _ = await wallet_text(tx, on)
            await deliver(tx, message, on.wallet,
                                  not_before=LATER)
        assert await claim(store, channels=(Channel.XMTP,)) == []
        assert len(await claim(store, channels=(Channel.XMTP,), now=LATER)) == 1

    async def test_a_retry_is_claimed_again_when_due_with_its_attempts_counted(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            retry = await tx.mark_retry(delivery.id, next_attempt_at=LATER, error_code=20429,
                                        error_message="Too Many Requests", now=NOW)
        assert retry.state is DeliveryState.PENDING and retry.next_attempt_at == LATER
        assert (retry.error_code, retry.error_message) == (20429, "Too Many Requests")
        assert await claim(store) == []
        async with store.transaction() as tx:
            [job] = await tx.claim_deliveries([Channel.SMS], holder=HOLDER, now=LATER,
                                              lease_until=LEASE,
                                              limit=5)
        assert job.delivery.attempts == 2

    async def test_a_delivery_handed_back_untried_keeps_its_attempts_and_its_last_error(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:  # attempt 1 failed for real
            await tx.mark_retry(delivery.id, next_attempt_at=NOW, error_code=20429,
                                error_message="Too Many Requests", now=NOW)
        for _ in range(3):  # then claimed and handed back three times, never tried
            [job] = await claim_jobs(store)
            async with store.transaction() as tx:
                back = await tx.hand_back(delivery.id, due=NOW, now=NOW, lease=lease_of(job))
            assert back.state is DeliveryState.PENDING
        assert (back.attempts, back.error_code) == (1, 20429)
        async with store.transaction() as tx:
            [job] = await tx.claim_deliveries([Channel.SMS], holder=HOLDER, now=NOW,
                                              lease_until=LEASE,
                                              limit=5)
        assert job.delivery.attempts == 2  # the second real attempt

    async def test_failure_is_final_and_keeps_the_code(self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            failed = await tx.mark_failed(delivery.id, error_code=21610,
                                          error_message="unsubscribed", now=LATER)
            with pytest.raises(NotFound):
                await tx.mark_failed(MISSING, error_code=None, error_message=None, now=LATER)
        assert failed.state is DeliveryState.FAILED and failed.error_code == 21610
        assert failed.updated_at == LATER
        assert await claim(store, now=LATER + timedelta(days=1)) == []

    async def test_two_workers_never_claim_the_same_delivery(
            self, store: SqlStore, open_another: OpenStore, on: Thread) -> None:
        """Two gateway processes drain one outbox of 200 deliveries (to 50 phones, four
        each, in order) concurrently."""
        async with store.transaction() as tx:
            phones = [await thread(tx, phone=PhoneNumber(f"+155501{n:05d}")) for n in range(50)]
            for _ in range(4):
                for phone in phones:
                    await wallet_text(tx, phone)
        other = await open_another()

        async def worker(target: SqlStore, holder: str) -> list[DeliveryId]:
            claimed: list[DeliveryId] = []
            while True:
                async with target.transaction() as tx:
                    jobs = await tx.claim_deliveries([Channel.SMS], holder=holder, now=NOW,
                                                     lease_until=LEASE, limit=7)
                    await asyncio.sleep(0.002)  # hold the claim open while the other claims
                    for job in jobs:
                        await tx.mark_sent(job.delivery.id, provider_id=f"SM{job.delivery.id}",
                                           now=NOW)
                if not jobs:
                    return claimed
                claimed += [job.delivery.id for job in jobs]

        first, second = await asyncio.gather(worker(store, HOLDER), worker(other, "HOother"))
        assert len(first) + len(second) == 200
        assert len(set(first) | set(second)) == 200
        if store.dialect == "postgresql":
            # SKIP LOCKED lets both make progress at once; SQLite's file lock is not fair
            # between processes, so there one worker may legitimately drain everything
            assert first and second


class TestSiblingWalletDeliveries:
    """A message to a team of wallets has one XMTP delivery per wallet but one post."""

    async def _team_message(self, store: SqlStore, on: Thread) -> list[DeliveryId]:
        async with store.transaction() as tx:
            other = await tx.add_participant(NewParticipant(
                on.conversation.id, Channel.XMTP, identity=OTHER_WALLET), now=NOW)
            message = await tx.add_message(NewMessage(
                on.conversation.id, on.phone.id, "to the team", MessageSource.SMS,
                external_id="SMteam"), now=NOW)
            return [(await deliver(tx, message, wallet)).id
                    for wallet in (on.wallet, other)]

    async def test_only_one_of_them_is_ever_claimed(
            self, store: SqlStore, open_another: OpenStore, on: Thread) -> None:
        first, second = await self._team_message(store, on)
        other = await open_another()
        async with store.transaction() as tx:  # one worker claims
            jobs = await tx.claim_deliveries([Channel.XMTP], holder=HOLDER, now=NOW,
                                             lease_until=LEASE,
                                             limit=10)
            assert [job.delivery.id for job in jobs] == [min(first, second)]
            if store.dialect == "postgresql":  # and, while its claim is open, another tries
                assert await claim(other, channels=(Channel.XMTP,)) == []
        assert await claim(other, channels=(Channel.XMTP,)) == [], \
            "the sibling is not another worker's to post"
        async with store.transaction() as tx:  # its post is marked for both
            await tx.mark_sent(first, provider_id="xmtp-1", now=NOW)
            await tx.mark_sent(second, provider_id="xmtp-1", now=NOW)
        assert await claim(store, channels=(Channel.XMTP,)) == []

    async def test_only_one_of_them_is_reconciled_after_a_lease_runs_out(
            self, store: SqlStore, on: Thread) -> None:
        first, second = await self._team_message(store, on)
        async with store.transaction() as tx:  # born claimed, both, by a worker that died
            for delivery in await tx.list_deliveries((await tx.get_delivery(first)).message_id):  # type: ignore[union-attr]
                await tx.mark_unknown(delivery.id, now=NOW)
            jobs = await tx.claim_reconcilable([Channel.XMTP], holder=HOLDER, now=LATER,
                                               lease_until=LATER + timedelta(seconds=30),
                                               limit=10)
        assert [job.delivery.id for job in jobs] == [min(first, second)]


class TestStatusCallbacks:
    async def sent(self, store: SqlStore, on: Thread, provider_id: str = "SM1") -> DeliveryId:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            sent = await tx.mark_sent(delivery.id, provider_id=provider_id, now=NOW)
        assert sent.state is DeliveryState.SENT and sent.provider_id == provider_id
        return delivery.id

    async def test_statuses_move_a_delivery_forward(self, store: SqlStore, on: Thread) -> None:
        delivery_id = await self.sent(store, on)
        async with store.transaction() as tx:
            delivered = await tx.apply_status("SM1", DeliveryState.DELIVERED, error_code=None,
                                              error_message=None, now=LATER)
        assert delivered is not None and delivered.id == delivery_id
        assert delivered.state is DeliveryState.DELIVERED and delivered.updated_at == LATER

    async def test_only_the_callback_that_moved_a_delivery_says_so(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            await tx.mark_sent(delivery.id, provider_id="SMonce", now=NOW)
        moves = []
        for state in (DeliveryState.UNDELIVERED, DeliveryState.UNDELIVERED,
                      DeliveryState.SENT, DeliveryState.FAILED):
            async with store.transaction() as tx:
                change = await tx.record_status("SMonce", state, error_code=30003,
                                                error_message=None, now=LATER)
            assert change is not None and change.delivery.state is DeliveryState.UNDELIVERED
            moves.append(change.moved)
        assert moves == [True, False, False, False]
        async with store.transaction() as tx:
            assert await tx.record_status("SMnobody", DeliveryState.FAILED, error_code=None,
                                          error_message=None, now=LATER) is None

    async def test_a_status_never_moves_a_delivery_back(self, store: SqlStore, on: Thread) -> None:
        delivery_id = await self.sent(store, on)
        async with store.transaction() as tx:
            await tx.apply_status("SM1", DeliveryState.DELIVERED, error_code=None,
                                  error_message=None, now=NOW)
            late = await tx.apply_status("SM1", DeliveryState.SENT, error_code=None,
                                         error_message=None, now=LATER)
            sideways = await tx.apply_status("SM1", DeliveryState.UNDELIVERED, error_code=30003,
                                             error_message="unreachable", now=LATER)
        assert late is not None and late.state is DeliveryState.DELIVERED
        assert sideways is not None and sideways.state is DeliveryState.DELIVERED
        assert sideways.error_code is None
        assert await state_of(store, delivery_id) is DeliveryState.DELIVERED

    async def test_sending_again_never_moves_a_delivery_back(
            self, store: SqlStore, on: Thread) -> None:
        delivery_id = await self.sent(store, on)
        async with store.transaction() as tx:
            await tx.apply_status("SM1", DeliveryState.DELIVERED, error_code=None,
                                  error_message=None, now=NOW)
            again = await tx.mark_sent(delivery_id, provider_id="SM1", now=LATER)
        assert again.state is DeliveryState.DELIVERED and again.updated_at == LATER
        assert await state_of(store, delivery_id) is DeliveryState.DELIVERED

    async def test_a_send_whose_outcome_was_unknown_is_sent_once_known(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            await tx.mark_unknown(delivery.id, now=NOW)
            sent = await tx.mark_sent(delivery.id, provider_id="SMlate", now=LATER)
        assert sent.state is DeliveryState.SENT and sent.provider_id == "SMlate"

    async def test_marking_a_missing_delivery_sent_is_not_found(self, store: SqlStore) -> None:
        with pytest.raises(NotFound):
            async with store.transaction() as tx:
                await tx.mark_sent(MISSING, provider_id="SMnone", now=NOW)

    async def test_a_failure_status_keeps_its_code(self, store: SqlStore, on: Thread) -> None:
        await self.sent(store, on)
        async with store.transaction() as tx:
            failed = await tx.apply_status("SM1", DeliveryState.UNDELIVERED, error_code=30006,
                                           error_message="landline", now=LATER)
        assert failed is not None and failed.state is DeliveryState.UNDELIVERED
        assert (failed.error_code, failed.error_message) == (30006, "landline")

    async def test_a_status_before_the_send_result_is_applied_when_it_arrives(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            assert await tx.apply_status("SMearly", DeliveryState.DELIVERED, error_code=None,
                                         error_message=None, now=NOW) is None
            assert await tx.apply_status("SMearly", DeliveryState.SENT, error_code=None,
                                         error_message=None, now=NOW) is None
        assert await state_of(store, delivery.id) is DeliveryState.SENDING
        async with store.transaction() as tx:
            sent = await tx.mark_sent(delivery.id, provider_id="SMearly", now=LATER)
        assert sent.state is DeliveryState.DELIVERED and sent.provider_id == "SMearly"
        async with store.engine.connect() as connection:  # applied, so no longer kept
            kept = await connection.execute(sa.select(sa.func.count()).select_from(
                pending_statuses))
            assert kept.scalar_one() == 0

    async def test_an_early_failure_is_applied_with_its_code(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
            await tx.apply_status("SMx", DeliveryState.FAILED, error_code=30007,
                                  error_message="filtered", now=NOW)
            failed = await tx.mark_sent(delivery.id, provider_id="SMx", now=NOW)
        assert failed.state is DeliveryState.FAILED and failed.error_code == 30007

    async def test_an_early_status_racing_the_send_result_is_not_lost(
            self, store: SqlStore, open_another: OpenStore, on: Thread) -> None:
        other = await open_another()
        for n in range(10):
            async with store.transaction() as tx:
                _, delivery = await wallet_text(tx, on)

            async def record_send(delivery_id: DeliveryId = delivery.id, n: int = n) -> None:
                async with store.transaction() as tx:
                    await tx.mark_sent(delivery_id, provider_id=f"SMrace{n}", now=NOW)

            async def callback(n: int = n) -> None:
                async with other.transaction() as tx:
                    await tx.apply_status(f"SMrace{n}", DeliveryState.DELIVERED, error_code=None,
                                          error_message=None, now=NOW)

            await asyncio.gather(record_send(), callback())
            assert await state_of(store, delivery.id) is DeliveryState.DELIVERED


PHONES = (Channel.SMS, Channel.WHATSAPP)


class TestReconciliation:
    async def test_unknown_and_abandoned_sends_are_reconcilable(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            for n in range(3):  # three phones, three lanes
                await wallet_text(tx, await thread(tx, phone=PhoneNumber(f"+1555010090{n}")))
        unknown, abandoned = await claim(store, limit=2)  # abandoned: its worker died
        async with store.transaction() as tx:
            await tx.mark_unknown(unknown, now=NOW)
            [in_flight] = [job.delivery.id for job in await tx.claim_deliveries(
                [Channel.SMS], holder=HOLDER, now=NOW, lease_until=LATER, limit=5)]
        after_lease = LEASE + timedelta(seconds=1)  # abandoned's lease ran out, not in_flight's
        async with store.transaction() as tx:
            jobs = await tx.claim_reconcilable(PHONES, holder=HOLDER, now=after_lease,
                                               lease_until=LATER, limit=10)
        assert {job.delivery.id for job in jobs} == {unknown, abandoned}
        assert all(job.delivery.state is DeliveryState.UNKNOWN for job in jobs)
        assert all(job.message.body == "hello phone" for job in jobs)
        assert await state_of(store, in_flight) is DeliveryState.SENDING
        async with store.transaction() as tx:  # leased: not handed out twice
            assert await tx.claim_reconcilable(PHONES, holder=HOLDER, now=after_lease,
                                               lease_until=LATER,
                                               limit=10) == []
            again = await tx.claim_reconcilable(
                PHONES, holder=HOLDER, now=LATER, lease_until=LATER + timedelta(minutes=1),
                    limit=10)
        assert {job.delivery.id for job in again} == {unknown, abandoned, in_flight}

    async def test_each_channel_reconciles_only_its_own(self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            await tx.mark_unknown(delivery.id, now=NOW)
            assert await tx.claim_reconcilable([Channel.XMTP], holder=HOLDER, now=NOW,
                                               lease_until=LEASE,
                                               limit=5) == []
            [job] = await tx.claim_reconcilable(PHONES, holder=HOLDER, now=NOW, lease_until=LEASE,
                                                limit=5)
        assert job.delivery.id == delivery.id

    async def test_a_reconciled_send_is_recorded_as_sent(self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store)
        async with store.transaction() as tx:
            await tx.mark_unknown(delivery.id, now=NOW)
            [job] = await tx.claim_reconcilable(PHONES, holder=HOLDER, now=NOW, lease_until=LEASE,
                                                limit=5)
            found = await tx.mark_sent(job.delivery.id, provider_id="SMfound", now=NOW)
            assert await tx.claim_reconcilable(PHONES, holder=HOLDER, now=LATER,
                                               lease_until=LATER, limit=5) == []
        assert found.state is DeliveryState.SENT and found.attempts == 1

    async def test_sids_recorded_on_other_deliveries_to_a_phone_are_known(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            first, second, third = [(await wallet_text(tx, on, "ok"))[1] for _ in range(3)]
            _, elsewhere = await wallet_text(tx, await thread(tx, phone=OTHER_PHONE), "ok")
        await claim(store)
        async with store.transaction() as tx:
            await tx.mark_sent(first.id, provider_id="SMfirst", now=NOW)
            await tx.mark_sent(second.id, provider_id="SMsecond", now=LATER)
            await tx.mark_sent(elsewhere.id, provider_id="SMelsewhere", now=NOW)
        async with store.transaction() as tx:
            assert await tx.provider_ids_sent_to(
                PHONE, PROXY, since=NOW, besides=third.id) == {"SMfirst", "SMsecond"}
            assert await tx.provider_ids_sent_to(
                PHONE, PROXY, since=NOW, besides=second.id) == {"SMfirst"}
            assert await tx.provider_ids_sent_to(
                PHONE, PROXY, since=NOW + timedelta(seconds=1), besides=third.id) == {"SMsecond"}
            assert await tx.provider_ids_sent_to(
                OTHER_PHONE, PROXY, since=NOW, besides=third.id) == {"SMelsewhere"}


class TestLeasedResults:
    """A worker's result is written only while it still holds the lease it claimed with."""

    async def test_a_result_under_the_current_lease_is_written(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        [job] = await claim_jobs(store)
        async with store.transaction() as tx:
            sent = await tx.mark_sent(delivery.id, provider_id="SMmine", now=NOW,
                                      lease=lease_of(job))
        assert (sent.state, sent.provider_id) == (DeliveryState.SENT, "SMmine")

    async def test_results_after_the_reconciler_took_the_row_are_refused(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        [mine] = await claim_jobs(store)  # leased until LEASE; the worker then stalls past it
        LEASE = lease_of(mine)
        async with store.transaction() as tx:
            [job] = await tx.claim_reconcilable(PHONES, holder="HOreconciler", now=LATER,
                                                lease_until=LATER + timedelta(minutes=1),
                                                limit=5)
        reconciler_lease = lease_of(job)
        assert reconciler_lease.token == LEASE.token + 1
        late_writes = [
            lambda tx: tx.mark_sent(delivery.id, provider_id="SMlate", now=LATER, lease=LEASE),
            lambda tx: tx.mark_retry(delivery.id, next_attempt_at=LATER, error_code=None,
                                     error_message="late", now=LATER, lease=LEASE),
            lambda tx: tx.mark_failed(delivery.id, error_code=21610, error_message="late",
                                      now=LATER, lease=LEASE),
            lambda tx: tx.mark_unknown(delivery.id, now=LATER, lease=LEASE),
            lambda tx: tx.hand_back(delivery.id, due=LATER, now=LATER, lease=LEASE),
        ]
        for write in late_writes:
            with pytest.raises(LeaseLost):
                async with store.transaction() as tx:
                    await write(tx)
        async with store.transaction() as tx:
            unchanged = await tx.get_delivery(delivery.id)
            assert unchanged == job.delivery
            found = await tx.mark_sent(delivery.id, provider_id="SMfound", now=LATER,
                                       lease=reconciler_lease)
        assert (found.state, found.provider_id) == (DeliveryState.SENT, "SMfound")

    async def test_a_missing_delivery_is_still_not_found(self, store: SqlStore) -> None:
        with pytest.raises(NotFound):
            async with store.transaction() as tx:
                await tx.mark_failed(MISSING, error_code=None, error_message=None, now=NOW,
                                     lease=Lease(HOLDER, 1, LEASE))
