"""Store contract: lanes keep deliveries in order, leases belong to live holders and are
fenced by a token."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.domain.ids import PhoneNumber
from gateway.domain.models import (
    Channel,
    DeliveryJob,
    DeliveryState,
    Lease,
    Message,
    MessageSource,
)
from gateway.domain.ports import NewMessage, StoreTx
from gateway.errors import LeaseLost
from gateway.store import SqlStore
from tests.contract.scenario import (
    HOLDER,
    LATER,
    NOW,
    OTHER_WALLET,
    Thread,
    deliver,
    thread,
    wallet_text,
)

LEASE = NOW + timedelta(seconds=30)
OTHER = "HOother"  # another gateway process
ALIVE = NOW + timedelta(days=1)


async def beat(store: SqlStore, holder: str, alive_until: datetime = ALIVE) -> None:
    async with store.transaction() as tx:
        await tx.beat(holder, description="tests", now=NOW, alive_until=alive_until)


async def claim(store: SqlStore, *, holder: str = HOLDER, now: datetime = NOW,
                channels: tuple[Channel, ...] = (Channel.SMS,)) -> list[DeliveryJob]:
    async with store.transaction() as tx:
        return await tx.claim_deliveries(channels, holder=holder, now=now, lease_until=LEASE,
                                         limit=10)


async def reconcilable(store: SqlStore, *, holder: str = HOLDER,
                       now: datetime = NOW) -> list[DeliveryJob]:
    async with store.transaction() as tx:
        return await tx.claim_reconcilable([Channel.SMS, Channel.XMTP], holder=holder, now=now,
                                           lease_until=LEASE, limit=10)


async def phone_text(tx: StoreTx, on: Thread) -> Message:
    """A phone's message, recorded without deliveries (the test adds them)."""
    return await tx.add_message(NewMessage(on.conversation.id, on.phone.id, "hi",
                                           MessageSource.SMS), now=NOW)


def lease_of(job: DeliveryJob) -> Lease:
    assert job.lease is not None
    return job.lease


@pytest.fixture
async def on(store: SqlStore) -> Thread:
    await beat(store, HOLDER)
    await beat(store, OTHER)
    async with store.transaction() as tx:
        return await thread(tx)


class TestLaneOrder:
    async def test_a_phones_texts_are_claimed_one_after_another(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            first, second = [(await wallet_text(tx, on, f"text {n}"))[1] for n in (1, 2)]
        assert [job.delivery.id for job in await claim(store, holder=OTHER)] == [first.id]
        assert await claim(store) == []  # behind one another process holds
        async with store.transaction() as tx:
            await tx.mark_sent(first.id, provider_id="SM1", now=NOW)
        assert [job.delivery.id for job in await claim(store)] == [second.id]

    async def test_a_text_in_its_backoff_holds_back_the_next_one(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            first, second = [(await wallet_text(tx, on, f"text {n}"))[1] for n in (1, 2)]
        await claim(store)
        async with store.transaction() as tx:
            await tx.mark_retry(first.id, next_attempt_at=LATER, error_code=20429,
                                error_message="Too Many Requests", now=NOW)
        assert await claim(store) == []  # the second is due, but not before the first
        async with store.transaction() as tx:
            assert await tx.next_due([Channel.SMS], now=NOW) == LATER
            # and it waits as long, so a claim's look at the due rows meets only lane heads
            assert (await tx.get_delivery(second.id)).next_attempt_at == LATER
            third = (await wallet_text(tx, on, "text 3"))[1]
            assert third.next_attempt_at == LATER  # born behind a waiting one
        assert [job.delivery.id for job in await claim(store, now=LATER)] == [first.id]
        assert [job.delivery.id for job in await claim(store, now=LATER)] == [second.id]
        assert [job.delivery.id for job in await claim(store, now=LATER)] == [third.id]

    async def test_a_text_handed_back_to_wait_holds_back_the_next_as_long(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            first, second = [(await wallet_text(tx, on, f"text {n}"))[1] for n in (1, 2)]
        [job] = await claim(store)
        async with store.transaction() as tx:  # paced: back to the outbox, due later
            await tx.hand_back(first.id, due=LATER, now=NOW, lease=job.delivery.lease)
            assert (await tx.get_delivery(second.id)).next_attempt_at == LATER
            assert await tx.next_due([Channel.SMS], now=NOW) == LATER
        assert await claim(store) == []
        assert [job.delivery.id for job in await claim(store, now=LATER)] == [first.id]

    async def test_one_handed_back_behind_a_head_in_its_backoff_waits_for_the_head(
            self, store: SqlStore, on: Thread) -> None:
        """The engine held the head and the next; the head's retry is written while the
        next is still held (LANE_BEHIND passes it by), then the next is handed back
        untried, due now: it is due when the head is, not before."""
        async with store.transaction() as tx:
            first, second = [(await wallet_text(tx, on, f"text {n}"))[1] for n in (1, 2)]
        [head] = await claim(store)
        [behind] = await claim(store)
        async with store.transaction() as tx:
            await tx.mark_retry(first.id, next_attempt_at=LATER, error_code=20429,
                                error_message="Too Many Requests", now=NOW,
                                lease=head.delivery.lease)
            handed = await tx.hand_back(second.id, due=NOW, now=NOW,
                                        lease=behind.delivery.lease)
        assert handed.next_attempt_at == LATER
        assert await claim(store) == []
        assert [job.delivery.id for job in await claim(store, now=LATER)] == [first.id]

    async def test_a_holder_claims_behind_what_it_holds_itself(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            first, second, third = [(await wallet_text(tx, on, f"text {n}"))[1]
                                    for n in (1, 2, 3)]
        assert [job.delivery.id for job in await claim(store)] == [first.id]
        assert [job.delivery.id for job in await claim(store)] == [second.id]
        assert await claim(store, holder=OTHER) == []
        assert [job.delivery.id for job in await claim(store)] == [third.id]

    async def test_a_failed_text_no_longer_holds_back_the_next(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            first, second = [(await wallet_text(tx, on, f"text {n}"))[1] for n in (1, 2)]
            await tx.mark_failed(first.id, error_code=900001, error_message="STOP", now=NOW)
        assert [job.delivery.id for job in await claim(store, holder=OTHER)] == [second.id]

    async def test_other_phones_are_other_lanes(self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            other = await thread(tx, phone=PhoneNumber("+15550100777"), wallet=OTHER_WALLET)
            await wallet_text(tx, on)
            await wallet_text(tx, on)
            await wallet_text(tx, other)
        assert len(await claim(store)) == 2  # one head per lane


class TestClaimedAtBirth:
    async def test_a_new_delivery_is_leased_to_its_holder_when_its_lane_is_clear(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message, _ = await wallet_text(tx, on)
            born = await deliver(tx, message, on.wallet, holder=HOLDER, lease_until=LEASE)
        assert born.state is DeliveryState.SENDING and born.attempts == 1
        assert born.lease == Lease(HOLDER, 1, LEASE)

    async def test_it_waits_pending_behind_an_earlier_open_delivery_held_elsewhere(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message, _ = await wallet_text(tx, on)  # to the phone: pending, in no one's hands
            later = await phone_text(tx, on)
            await deliver(tx, message, on.wallet, holder=OTHER, lease_until=LEASE)
            behind_other = await deliver(tx, later, on.wallet, holder=HOLDER,
                                         lease_until=LEASE)
            behind_pending = await deliver(tx, later, on.phone, holder=HOLDER,
                                           lease_until=LEASE)
        assert behind_other.state is DeliveryState.PENDING and behind_other.lease is None
        assert behind_pending.state is DeliveryState.PENDING

    async def test_it_is_leased_behind_an_earlier_one_its_holder_has(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            message = await phone_text(tx, on)
            later = await phone_text(tx, on)
            await deliver(tx, message, on.wallet, holder=HOLDER, lease_until=LEASE)
            behind = await deliver(tx, later, on.wallet, holder=HOLDER, lease_until=LEASE)
        assert behind.state is DeliveryState.SENDING


class TestFencing:
    async def test_every_claim_gives_the_row_a_new_token(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        [first] = await claim(store)
        async with store.transaction() as tx:
            await tx.mark_unknown(delivery.id, now=NOW, lease=lease_of(first))
        [again] = await reconcilable(store, holder=OTHER)
        assert lease_of(again).token == lease_of(first).token + 1
        assert lease_of(again).holder == OTHER
        with pytest.raises(LeaseLost):
            async with store.transaction() as tx:
                await tx.mark_sent(delivery.id, provider_id="SMlate", now=NOW,
                                   lease=lease_of(first))

    async def test_a_lease_is_renewed_only_while_it_is_still_held(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        [job] = await claim(store)
        async with store.transaction() as tx:
            renewed = await tx.renew_lease(delivery.id, lease_of(job), until=LATER)
            unchanged = await tx.get_delivery(delivery.id)
        assert renewed == Lease(HOLDER, lease_of(job).token, LATER)
        assert unchanged is not None and unchanged.updated_at == job.delivery.updated_at
        async with store.transaction() as tx:
            await tx.mark_unknown(delivery.id, now=NOW, lease=renewed)
        await reconcilable(store, holder=OTHER)
        async with store.transaction() as tx:
            assert await tx.renew_lease(delivery.id, renewed, until=LATER) is None


class TestHolders:
    async def test_a_dead_holders_sends_are_reconciled_before_their_lease_runs_out(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            _, delivery = await wallet_text(tx, on)
        await claim(store, holder=OTHER)
        assert await reconcilable(store) == []  # the holder lives: its lease stands
        await beat(store, OTHER, alive_until=NOW)  # its last heartbeat has run out
        [job] = await reconcilable(store)
        assert job.delivery.id == delivery.id and job.delivery.state is DeliveryState.UNKNOWN

    async def test_a_holder_that_never_beat_holds_nothing(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            await wallet_text(tx, on)
        await claim(store, holder="HOnever")
        assert len(await reconcilable(store)) == 1

    async def test_a_process_starting_again_takes_back_what_its_last_life_held(
            self, store: SqlStore, on: Thread) -> None:
        async with store.transaction() as tx:
            other = await thread(tx, phone=PhoneNumber("+15550100777"), wallet=OTHER_WALLET)
            _, mine = await wallet_text(tx, on)
            _, theirs = await wallet_text(tx, other)
        await claim(store, holder=HOLDER, channels=(Channel.SMS,))
        async with store.transaction() as tx:
            await tx.mark_retry(theirs.id, next_attempt_at=NOW, error_code=None,
                                error_message=None, now=NOW)
        await claim(store, holder=OTHER)
        async with store.transaction() as tx:
            [released] = await tx.release_held(HOLDER, now=LATER)
        assert released.id == mine.id and released.state is DeliveryState.UNKNOWN
        assert released.lease is None and released.updated_at == LATER
        async with store.transaction() as tx:
            untouched = await tx.get_delivery(theirs.id)
        assert untouched is not None and untouched.state is DeliveryState.SENDING
        [job] = await reconcilable(store)  # at once: no lease to wait out
        assert job.delivery.id == mine.id
