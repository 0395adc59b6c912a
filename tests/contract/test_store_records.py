"""Store contract: contacts, outbound quotas, chat cursors and the event log."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from gateway.domain.ids import ConversationId
from gateway.domain.models import Channel, Consent, DeliveryState, MessageSource
from gateway.domain.ports import NewMessage
from gateway.store import SqlStore
from tests.contract.scenario import (
    LATER,
    NOW,
    OTHER_PHONE,
    OTHER_PROXY,
    OTHER_WALLET,
    PHONE,
    PROXY,
    OpenStore,
    deliver,
    thread,
    wallet_text,
)


class TestContacts:
    async def test_a_phone_that_never_texted_is_unknown(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            assert await tx.get_contact(PHONE, PROXY) is None

    async def test_the_first_inbound_is_kept_and_the_last_moves(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            first = await tx.record_inbound(PHONE, PROXY, now=NOW)
            again = await tx.record_inbound(PHONE, PROXY, now=LATER)
            assert await tx.get_contact(PHONE, PROXY) == again
            assert await tx.get_contact(PHONE, OTHER_PHONE) is None  # per proxy number
        assert (first.first_inbound_at, first.last_inbound_at) == (NOW, NOW)
        assert (again.first_inbound_at, again.last_inbound_at) == (NOW, LATER)
        assert again.consent is Consent.UNKNOWN

    async def test_consent_survives_later_texts(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            denied = await tx.set_contact_consent(PHONE, PROXY, Consent.DENIED, now=NOW)
            assert denied.first_inbound_at is None  # consent alone is not a text
            await tx.record_inbound(PHONE, PROXY, now=LATER)
            contact = await tx.get_contact(PHONE, PROXY)
            assert contact is not None and contact.consent is Consent.DENIED
            allowed = await tx.set_contact_consent(PHONE, PROXY, Consent.ALLOWED, now=LATER)
        assert allowed.consent is Consent.ALLOWED and allowed.first_inbound_at == LATER

    async def test_concurrent_first_texts_make_one_contact(
            self, store: SqlStore, open_another: OpenStore) -> None:
        other = await open_another()

        async def text_in(target: SqlStore) -> None:
            async with target.transaction() as tx:
                await tx.record_inbound(PHONE, PROXY, now=NOW)

        await asyncio.gather(*(text_in(s) for s in [store, other] * 3))
        async with store.transaction() as tx:
            contact = await tx.get_contact(PHONE, PROXY)
        assert contact is not None and contact.first_inbound_at == NOW


class TestOutboundQuotas:
    async def test_counts_texts_from_a_number_by_channel_phone_and_time(
            self, store: SqlStore) -> None:
        sms = [Channel.SMS]
        async with store.transaction() as tx:
            support = await thread(tx, rule="support")
            sales = await thread(tx, phone=OTHER_PHONE, rule="sales", wallet=OTHER_WALLET,
                                 proxy=OTHER_PROXY)
            api = await thread(tx, phone=OTHER_PHONE, rule=None, wallet=OTHER_WALLET)
            for _ in range(2):
                message, _ = await wallet_text(tx, support)
                await deliver(tx, message, support.wallet)
            await wallet_text(tx, sales)
            await wallet_text(tx, api)  # a conversation the API made on the same number
            assert await tx.count_outbound(since=NOW, proxy=PROXY, channels=sms) == 3
            assert await tx.count_outbound(since=NOW, proxy=PROXY, channels=sms,
                                           address=PHONE) == 2
            assert await tx.count_outbound(since=NOW, proxy=OTHER_PROXY, channels=sms) == 1
            assert await tx.count_outbound(since=NOW, proxy=OTHER_PROXY, channels=sms,
                                           address=PHONE) == 0
            assert await tx.count_outbound(since=NOW, proxy=PROXY,
                                           channels=[Channel.WHATSAPP]) == 0
            assert await tx.count_outbound(since=NOW + timedelta(seconds=1), proxy=PROXY,
                                           channels=sms) == 0

    async def test_notices_and_texts_refused_before_the_provider_do_not_count(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            support = await thread(tx, rule="support")
            notice = await tx.add_message(NewMessage(
                conversation_id=support.conversation.id, author=None, body="HELP answer",
                source=MessageSource.SYSTEM), now=NOW)
            await deliver(tx, notice, support.phone)
            _, refused = await wallet_text(tx, support)
            await tx.mark_failed(refused.id, error_code=900001, error_message="STOP",
                                 now=NOW)
            _, failed_later = await wallet_text(tx, support)  # sent, then failed: counted
            await tx.mark_sent(failed_later.id, provider_id="SMx", now=NOW)
            await tx.apply_status("SMx", DeliveryState.FAILED, error_code=30003,
                                  error_message=None, now=NOW)
            await wallet_text(tx, support)  # waiting to be sent: counted
            assert await tx.count_outbound(since=NOW, proxy=PROXY, channels=[Channel.SMS],
                                           address=PHONE) == 2


class TestChatCursors:
    async def test_a_cursor_only_moves_forward(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            assert await tx.get_cursor("group-1") is None
            await tx.set_cursor("group-1", 1_700_000_000_000_000_000)
            await tx.set_cursor("group-1", 1_600_000_000_000_000_000)
            assert await tx.get_cursor("group-1") == 1_700_000_000_000_000_000
            await tx.set_cursor("group-1", 1_800_000_000_000_000_000)
            assert await tx.get_cursor("group-1") == 1_800_000_000_000_000_000
            assert await tx.get_cursor("group-2") is None

    async def test_every_cursor_is_read_at_once(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            assert await tx.all_cursors() == {}
            await tx.set_cursor("group-1", 1_700_000_000_000_000_000)
            await tx.set_cursor("group-2", 5)
            assert await tx.all_cursors() == {"group-1": 1_700_000_000_000_000_000,
                                              "group-2": 5}


class TestEventLog:
    async def test_events_page_in_order_by_id(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            other = await tx.create_conversation(rule=None, now=NOW)
            written = [
                await tx.add_event("message.added", conversation_id=on.conversation.id,
                                   data={"index": 0, "nested": {"ok": True}}, now=NOW),
                await tx.add_event("conversation.added", conversation_id=other.id, data={},
                                   now=NOW),
                await tx.add_event("gateway.started", conversation_id=None, data={}, now=LATER),
            ]
        ids = [event.id for event in written]
        assert ids == sorted(ids) and len(set(ids)) == 3
        async with store.transaction() as tx:
            assert await tx.list_events(after=0, limit=10) == written
            assert await tx.list_events(after=ids[0], limit=1) == [written[1]]
            assert await tx.list_events(after=0, limit=10,
                                        conversation_id=on.conversation.id) == [written[0]]
            assert await tx.list_events(after=ids[2], limit=10) == []
            assert await tx.list_events(after=0, limit=10,
                                        conversation_id=ConversationId("CH" + "0" * 32)) == []
        assert written[0].data == {"index": 0, "nested": {"ok": True}}
        assert written[2].created_at == LATER and written[2].conversation_id is None

    async def test_a_reader_never_skips_an_event_written_concurrently(
            self, store: SqlStore, open_another: OpenStore) -> None:
        """Pages by ``id > last seen`` while writers commit: every event is seen once."""
        writers = [store, await open_another()]
        reader = await open_another()
        done = asyncio.Event()

        async def write(target: SqlStore, n: int) -> None:
            for i in range(n):
                async with target.transaction() as tx:
                    await tx.add_event("tick", conversation_id=None, data={"i": i}, now=NOW)
                    # commit a little after taking the id, so commits reorder
                    await asyncio.sleep(random.uniform(0, 0.003))

        async def read() -> list[int]:
            seen: list[int] = []
            while True:
                finished = done.is_set()
                async with reader.transaction() as tx:
                    page = await tx.list_events(after=seen[-1] if seen else 0, limit=50)
                seen += [event.id for event in page]
                if finished and not page:
                    return seen
                await asyncio.sleep(0)

        reading = asyncio.create_task(read())
        await asyncio.gather(*(write(w, 30) for w in writers * 2))
        done.set()
        seen = await reading
        assert len(seen) == 120 and len(set(seen)) == 120
