"""Store contract: messages (gap-free indexes, idempotency) and encryption at rest."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import sqlalchemy as sa

from gateway.domain.ids import ConversationId, MessageId
from gateway.domain.models import Media, Message, MessageSource, RemoteReference
from gateway.domain.ports import NewMessage
from gateway.errors import DuplicateMessage, NotFound, UnknownEncryptionKey
from gateway.store import SqlStore
from gateway.store.tables import messages
from tests.contract.scenario import KEYS, LATER, NOW, OpenStore, thread


def sms(conversation_id: ConversationId, body: str | None, sid: str | None = None,
        **extra: object) -> NewMessage:
    return NewMessage(conversation_id, None, body, MessageSource.SMS,
                      external_id=sid, **extra)  # type: ignore[arg-type]


class TestMessages:
    async def test_a_message_reads_back_as_written(self, store: SqlStore) -> None:
        media = (Media("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
                       "image/jpeg"), Media("https://example.com/b.pdf"))
        async with store.transaction() as tx:
            on = await thread(tx)
            written = await tx.add_message(NewMessage(
                on.conversation.id, on.phone.id, "héllo 👋", MessageSource.SMS,
                external_id="SM1", media=media, attributes={"segments": 1}), now=LATER)
        async with store.transaction() as tx:
            assert await tx.get_message(written.id) == written
            assert await tx.find_message(MessageSource.SMS, "SM1") == written
            assert await tx.find_message(MessageSource.XMTP, "SM1") is None
            assert await tx.get_message(MessageId("IM" + "0" * 32)) is None
            conversation = await tx.get_conversation(on.conversation.id)
        assert written.body == "héllo 👋" and written.media == media
        assert written.author == on.phone.id and written.attributes == {"segments": 1}
        assert written.index == 0 and written.created_at == LATER
        assert conversation is not None and conversation.last_message_at == LATER

    async def test_a_wallets_files_read_back_as_described_keys_sealed_with_the_body(
            self, store: SqlStore) -> None:
        media = (Media("", "image/png", "cat.png", 2048, blob_key="wallet/ab12"),
                 Media("https://files.example/x", None, "doc.pdf", 99, remote=RemoteReference(
                     "0f" * 32, secrets.token_bytes(32), secrets.token_bytes(32),
                     secrets.token_bytes(12))))
        async with store.transaction() as tx:
            on = await thread(tx)
            written = await tx.add_message(NewMessage(
                on.conversation.id, None, None, MessageSource.XMTP, external_id="x1",
                media=media), now=NOW)
        async with store.transaction() as tx:
            assert (await tx.get_message(written.id)) == written
            row = (await tx.connection.execute(
                sa.select(messages.c.media_ciphertext).where(messages.c.id == written.id))).one()
        assert media[1].remote is not None
        assert media[1].remote.secret not in row[0] and b"doc.pdf" not in row[0]

    async def test_a_message_may_have_no_body_and_no_author(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            notice = await tx.add_message(sms(on.conversation.id, None), now=NOW)
            assert await tx.get_message(notice.id) == notice
        assert notice.body is None and notice.author is None and notice.media == ()

    async def test_indexes_count_up_from_zero_per_conversation(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            first = await thread(tx)
            second = await tx.create_conversation(rule=None, now=NOW)
            indexes = [(await tx.add_message(sms(first.conversation.id, "a"), now=NOW)).index
                       for _ in range(3)]
            other = await tx.add_message(sms(second.id, "b"), now=NOW)
        assert indexes == [0, 1, 2] and other.index == 0

    async def test_a_message_in_a_missing_conversation_is_not_found(
            self, store: SqlStore) -> None:
        with pytest.raises(NotFound):
            async with store.transaction() as tx:
                await tx.add_message(sms(ConversationId("CH" + "0" * 32), "x"), now=NOW)

    async def test_a_repeated_external_id_names_the_message_already_recorded(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            original = await tx.add_message(sms(on.conversation.id, "once", "SM42"), now=NOW)
        with pytest.raises(DuplicateMessage) as caught:
            async with store.transaction() as tx:
                await tx.add_message(sms(on.conversation.id, "twice", "SM42"), now=LATER)
        assert caught.value.existing_id == original.id
        async with store.transaction() as tx:
            # another source may reuse the id; the duplicate took no index
            xmtp = await tx.add_message(NewMessage(
                on.conversation.id, None, "x", MessageSource.XMTP, external_id="SM42"), now=NOW)
            assert xmtp.index == 1
            found = await tx.find_message(MessageSource.SMS, "SM42")
            assert found is not None and found.body == "once"

    async def test_a_transaction_stays_usable_after_a_duplicate(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            original = await tx.add_message(sms(on.conversation.id, "once", "SM7"), now=NOW)
            with pytest.raises(DuplicateMessage):
                await tx.add_message(sms(on.conversation.id, "again", "SM7"), now=LATER)
            conversation = await tx.get_conversation(on.conversation.id)
            assert conversation is not None and conversation.last_message_at == NOW
            after = await tx.add_message(sms(on.conversation.id, "next", "SM8"), now=LATER)
        assert (original.index, after.index) == (0, 1)

    async def test_concurrent_writers_leave_no_gap_and_no_repeat(
            self, store: SqlStore, open_another: OpenStore) -> None:
        """Two stores (two gateway processes) append to one conversation at once."""
        other = await open_another()
        async with store.transaction() as tx:
            on = await thread(tx)

        async def append(target: SqlStore, n: int) -> None:
            for _ in range(n):
                async with target.transaction() as tx:
                    await tx.add_message(sms(on.conversation.id, "x", secrets.token_hex(8)),
                                         now=NOW)

        await asyncio.gather(*(append(s, 10) for s in [store, other] * 4))
        async with store.engine.connect() as connection:
            result = await connection.execute(
                sa.select(messages.c.index).where(messages.c.conversation_id == on.conversation.id))
            indexes = sorted(result.scalars())
        assert indexes == list(range(80))

    async def test_concurrent_duplicates_are_recorded_once(
            self, store: SqlStore, open_another: OpenStore) -> None:
        other = await open_another()
        async with store.transaction() as tx:
            on = await thread(tx)

        async def deliver_webhook(target: SqlStore) -> str:
            try:
                async with target.transaction() as tx:
                    return (await tx.add_message(sms(on.conversation.id, "x", "SMdup"),
                                                 now=NOW)).id
            except DuplicateMessage as duplicate:
                return duplicate.existing_id

        ids = await asyncio.gather(*(deliver_webhook(s) for s in [store, other] * 5))
        assert len(set(ids)) == 1


async def raw_message(store: SqlStore, message_id: str) -> sa.RowMapping:
    async with store.engine.connect() as connection:
        row = (await connection.execute(
            messages.select().where(messages.c.id == message_id))).mappings().one()
    return row


class TestEncryptionAtRest:
    async def test_bodies_and_media_are_not_stored_in_clear(self, store: SqlStore) -> None:
        body = "my one-time code is 918273"
        url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MMsecret/Media/ME1"
        async with store.transaction() as tx:
            on = await thread(tx)
            written = await tx.add_message(sms(on.conversation.id, body, "SM1",
                                               media=(Media(url, "image/png"),)), now=NOW)
        row = await raw_message(store, written.id)
        assert row["key_id"] == "k1"
        for column in ("body_ciphertext", "media_ciphertext"):
            sealed = bytes(row[column])
            assert b"918273" not in sealed and b"MMsecret" not in sealed
            assert len(sealed) > 24  # nonce and MAC around the content
        again = await tx_get(store, written.id)
        assert again.body == body and again.media[0].url == url

    async def test_the_same_body_seals_differently_each_time(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            a = await tx.add_message(sms(on.conversation.id, "same"), now=NOW)
            b = await tx.add_message(sms(on.conversation.id, "same"), now=NOW)
        assert (await raw_message(store, a.id))["body_ciphertext"] != (
            await raw_message(store, b.id))["body_ciphertext"]

    async def test_a_rotated_key_seals_new_rows_and_old_rows_still_open(
            self, store: SqlStore, open_another: OpenStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            old = await tx.add_message(sms(on.conversation.id, "under k1"), now=NOW)
        rotated = await open_another(keys={**KEYS, "k2": secrets.token_bytes(32)},
                                     active_key="k2")
        async with rotated.transaction() as tx:
            new = await tx.add_message(sms(on.conversation.id, "under k2"), now=LATER)
        assert (await tx_get(rotated, old.id)).body == "under k1"
        assert (await raw_message(rotated, old.id))["key_id"] == "k1"
        assert (await raw_message(rotated, new.id))["key_id"] == "k2"
        with pytest.raises(UnknownEncryptionKey):
            await tx_get(store, new.id)  # a process that was never given k2

    async def test_resealing_moves_every_row_to_the_active_key(
            self, store: SqlStore, open_another: OpenStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            written = [await tx.add_message(sms(on.conversation.id, f"m{i}"), now=NOW)
                       for i in range(5)]
        k2 = {"k2": secrets.token_bytes(32)}
        rotated = await open_another(keys={**KEYS, **k2}, active_key="k2")
        assert [await rotated.reseal(limit=2) for _ in range(4)] == [2, 2, 1, 0]
        only_new = await open_another(keys=k2, active_key="k2")
        assert [(await tx_get(only_new, m.id)).body for m in written] == [
            f"m{i}" for i in range(5)]

    async def test_a_row_under_a_key_no_longer_configured_cannot_be_read(
            self, store: SqlStore, open_another: OpenStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            written = await tx.add_message(sms(on.conversation.id, "x"), now=NOW)
        stranger = await open_another(keys={"k9": secrets.token_bytes(32)}, active_key="k9")
        with pytest.raises(UnknownEncryptionKey):
            await tx_get(stranger, written.id)

    async def test_the_active_key_must_be_configured(self, store: SqlStore,
                                                     open_another: OpenStore) -> None:
        with pytest.raises(UnknownEncryptionKey):
            await open_another(keys=KEYS, active_key="k2")


async def tx_get(store: SqlStore, message_id: MessageId) -> Message:
    async with store.transaction() as tx:
        message = await tx.get_message(message_id)
    assert message is not None
    return message

