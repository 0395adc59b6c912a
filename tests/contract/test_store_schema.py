"""Store contract: migrations, the schema's own guarantees, transactions, reachability."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gateway import cli
from gateway.domain.ids import MessageId
from gateway.domain.models import Channel, Consent
from gateway.errors import NotFound, StoreError
from gateway.store import SqlStore, open_store
from gateway.store.engine import MIGRATIONS, create_engine, current_revision, upgrade
from gateway.store.tables import conversations, deliveries, events, metadata, participants
from tests.contract.scenario import (
    KEYS,
    LATER,
    NOW,
    OTHER_PHONE,
    OTHER_WALLET,
    PHONE,
    PROXY,
    OpenStore,
    thread,
    wallet_text,
)

REPO = Path(__file__).resolve().parents[2]
HEAD = "0007"


async def _store_at(store_url: str, revision: str) -> SqlStore:
    """The store on a database migrated up to ``revision`` only: what an older gateway
    left behind, written to through today's store before the upgrade under test."""
    engine = create_engine(store_url)
    try:
        await upgrade(engine, revision)
    finally:
        await engine.dispose()
    return await open_store(store_url, keys=KEYS, active_key="k1", migrate=False)


class TestMigrations:
    async def test_a_new_database_is_migrated_to_head(self, store: SqlStore) -> None:
        assert await current_revision(store.engine) == HEAD

    async def test_upgrading_again_changes_nothing(self, store: SqlStore,
                                                   open_another: OpenStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
        again = await open_another()
        async with again.transaction() as tx:
            assert await tx.get_conversation(on.conversation.id) == on.conversation

    async def test_at_0003_sms_and_whatsapp_come_apart_keeping_what_was_known(
            self, store_url: str) -> None:
        engine = create_engine(store_url)
        try:
            await upgrade(engine, "0002")
            async with engine.begin() as connection:  # a phone on WhatsApp, opted out
                await connection.execute(sa.text(
                    "INSERT INTO contacts (address, proxy_address, consent, first_inbound_at,"
                    " last_inbound_at, updated_at) VALUES (:a, :p, 'denied', :t, :t, :t)"),
                    {"a": PHONE, "p": PROXY, "t": NOW})
            old = await open_store(store_url, keys=KEYS, active_key="k1", migrate=False)
            try:
                async with old.transaction() as tx:
                    conversation = await tx.create_conversation(rule="support", now=NOW)
                async with old.engine.begin() as connection:
                    await connection.execute(participants.insert().values(
                        id="MB" + "1" * 32, conversation_id=conversation.id,
                        channel="whatsapp", address=PHONE, proxy_address=PROXY,
                        consent="denied", attributes={}, joined_at=NOW,
                        active_pair=f"{PHONE} {PROXY}"))
            finally:
                await old.close()
        finally:
            await engine.dispose()
        upgraded = await open_store(store_url, keys=KEYS, active_key="k1")
        try:
            async with upgraded.transaction() as tx:
                on_whatsapp = await tx.find_phone_participant(PHONE, PROXY, Channel.WHATSAPP)
                assert on_whatsapp is not None and on_whatsapp.id == "MB" + "1" * 32
                assert await tx.find_phone_participant(PHONE, PROXY, Channel.SMS) is None
                for channel in (Channel.SMS, Channel.WHATSAPP):  # the opt-out holds on both
                    contact = await tx.get_contact(PHONE, PROXY, channel)
                    assert contact is not None and contact.consent is Consent.DENIED
                    assert contact.channel is channel
                # and an SMS conversation with the same phone and number may now open
                sms = await thread(tx, rule="support")
                assert await tx.find_phone_participant(PHONE, PROXY) == sms.phone
        finally:
            await upgraded.close()

    async def test_downgrading_0003_merges_the_channels_keeping_every_opt_out(
            self, store_url: str) -> None:
        engine = create_engine(store_url)
        try:
            await upgrade(engine, "0003")
            async with engine.begin() as connection:
                await connection.execute(sa.text(
                    "INSERT INTO contacts (address, proxy_address, channel, consent,"
                    " first_inbound_at, last_inbound_at, updated_at) VALUES"
                    " ('+15551230001', :p, 'sms', 'allowed', :t, :t, :t),"
                    " ('+15551230001', :p, 'whatsapp', 'denied', :t, :t, :t),"
                    " ('+15551230002', :p, 'whatsapp', 'allowed', :t, :t, :t)"),
                    {"p": PROXY, "t": NOW})

            def downgrade(connection: sa.Connection) -> None:
                from alembic import command
                from alembic.config import Config

                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS))
                config.attributes["connection"] = connection
                command.downgrade(config, "0002")

            async with engine.begin() as connection:
                await connection.run_sync(downgrade)
            async with engine.connect() as connection:
                found = (await connection.execute(sa.text(
                    "SELECT address, consent FROM contacts ORDER BY address"))).all()
            assert [tuple(row) for row in found] == [
                ("+15551230001", "denied"), ("+15551230002", "allowed")]
            await upgrade(engine)
        finally:
            await engine.dispose()

    async def test_a_database_at_0001_upgrades_with_its_rows(self, store_url: str) -> None:
        old = await _store_at(store_url, "0001")
        assert await current_revision(old.engine) == "0001"
        try:
            async with old.transaction() as tx:
                on = await thread(tx)
        finally:
            await old.close()
        upgraded = await open_store(store_url, keys=KEYS, active_key="k1")
        try:
            assert await current_revision(upgraded.engine) == HEAD
            async with upgraded.transaction() as tx:
                assert await tx.get_conversation(on.conversation.id) == on.conversation
        finally:
            await upgraded.close()

    async def test_events_detached_before_0004_get_their_conversation_back(
            self, store_url: str) -> None:
        """Up to 0002 a deleted conversation's events had their conversation_id nulled;
        0004 restores it wherever the event's own data names the conversation."""
        old = await _store_at(store_url, "0002")
        try:
            async with old.transaction() as tx:
                gone = (await thread(tx)).conversation
                kept = (await thread(tx, phone=OTHER_PHONE, wallet=OTHER_WALLET)).conversation
                for event_type, data in [
                        ("conversation.added", {"conversation": {"id": gone.id}}),
                        ("participant.added", {"participant": {"conversation_id": gone.id}}),
                        ("message.added", {"message_id": "IM" + "5" * 32, "index": 0})]:
                    await tx.add_event(event_type, conversation_id=gone.id, data=data, now=NOW)
                await tx.add_event("conversation.updated", conversation_id=kept.id,
                                   data={"conversation": {"id": kept.id}}, now=NOW)
                await tx.add_event("delivery.updated", conversation_id=None,
                                   data={"delivery_id": "DL" + "6" * 32}, now=NOW)
            async with old.transaction() as tx:  # what deleting did up to 0002
                await tx.connection.execute(events.update().where(
                    events.c.conversation_id == gone.id).values(conversation_id=None))
                await tx.connection.execute(participants.delete().where(
                    participants.c.conversation_id == gone.id))
                await tx.connection.execute(conversations.delete().where(
                    conversations.c.id == gone.id))
                await tx.add_event("conversation.removed", conversation_id=None,
                                   data={"conversation_id": gone.id}, now=NOW)
        finally:
            await old.close()
        upgraded = await open_store(store_url, keys=KEYS, active_key="k1")
        try:
            async with upgraded.transaction() as tx:
                logged = [(e.type, e.conversation_id)
                          for e in await tx.list_events(after=0, limit=100)]
        finally:
            await upgraded.close()
        assert logged == [
            ("conversation.added", gone.id), ("participant.added", gone.id),
            ("message.added", None),  # names only its message, deleted with the rest
            ("conversation.updated", kept.id), ("delivery.updated", None),
            ("conversation.removed", gone.id)]

    async def test_at_0007_a_backlog_waits_behind_its_lane_heads(self, store_url: str) -> None:
        """Before 0007 a text queued behind one in its backoff kept its own due time;
        0007 moves it to the head's, and touches nothing else."""
        old = await _store_at(store_url, "0006")
        try:
            async with old.transaction() as tx:
                on = await thread(tx)
                elsewhere = await thread(tx, phone=OTHER_PHONE, wallet=OTHER_WALLET)
                head, queued, after = [(await wallet_text(tx, on, f"text {n}"))[1]
                                       for n in (1, 2, 3)]
                alone = (await wallet_text(tx, elsewhere, "another lane"))[1]
                failed = (await wallet_text(tx, elsewhere, "failed"))[1]
                # as 0006's store left them: the head in its backoff, the rest due now
                for delivery, due, state in [(head, LATER, "pending"), (queued, NOW, "pending"),
                                             (after, NOW + timedelta(hours=1), "pending"),
                                             (alone, NOW, "pending"), (failed, None, "failed")]:
                    await tx.connection.execute(deliveries.update().where(
                        deliveries.c.id == delivery.id).values(next_attempt_at=due,
                                                               state=state))
        finally:
            await old.close()
        upgraded = await open_store(store_url, keys=KEYS, active_key="k1")
        try:
            async with upgraded.transaction() as tx:
                due = {d.id: (await tx.get_delivery(d.id)).next_attempt_at
                       for d in (head, queued, after, alone, failed)}
        finally:
            await upgraded.close()
        assert due == {head.id: LATER, queued.id: LATER,
                       after.id: NOW + timedelta(hours=1),  # later already: kept
                       alone.id: NOW, failed.id: None}

    async def test_the_migrated_schema_matches_the_tables(self, store: SqlStore) -> None:
        def differences(connection: sa.Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with store.engine.connect() as connection:
            assert await connection.run_sync(differences) == []

    async def test_a_store_opened_without_migrating_finds_no_tables(
            self, store_url: str) -> None:
        bare = await open_store(store_url, keys=KEYS, active_key="k1", migrate=False)
        try:
            assert await current_revision(bare.engine) is None
            with pytest.raises(StoreError):
                async with bare.transaction() as tx:
                    await tx.get_message(MessageId("IM" + "0" * 32))
        finally:
            await bare.close()

    def test_the_command_line_upgrades_and_reports(
            self, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = yaml.safe_load((REPO / "config" / "gateway.yaml").read_text())
        config["data_dir"] = str(tmp_path)
        config["database"]["url"] = store_url
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        assert cli.main(["db", "current", "--config", str(path)]) == 0
        assert "at revision none" in capsys.readouterr().out
        assert cli.main(["db", "upgrade", "--config", str(path)]) == 0
        assert cli.main(["db", "current", "--config", str(path)]) == 0
        assert capsys.readouterr().out.splitlines()[-1].endswith(f"at revision {HEAD}")

    def test_the_command_line_fails_cleanly_on_a_bad_config(
            self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "gateway.yaml"
        path.write_text("database: [")
        assert cli.main(["db", "upgrade", "--config", str(path)]) == 1
        assert "gateway db upgrade:" in capsys.readouterr().err


class TestSchemaInvariants:
    """The database refuses what the store's code already avoids, for writers (say, the
    REST API's own queries) that bypass it."""

    async def test_two_active_rows_cannot_share_a_pair(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
        with pytest.raises(StoreError):
            async with store.transaction() as tx:
                await tx.connection.execute(participants.insert().values(
                    id="MB" + "1" * 32, conversation_id=on.conversation.id, channel="sms",
                    address=PHONE, proxy_address=PROXY, consent="unknown", attributes={},
                    joined_at=NOW, active_pair=f"{PHONE} {PROXY}"))

    async def test_unknown_states_are_refused(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
        with pytest.raises(StoreError):
            async with store.transaction() as tx:
                await tx.connection.execute(
                    participants.update().where(participants.c.id == on.phone.id)
                    .values(consent="maybe"))

    async def test_foreign_keys_are_enforced(self, store: SqlStore) -> None:
        with pytest.raises(StoreError):
            async with store.transaction() as tx:
                await tx.connection.execute(participants.insert().values(
                    id="MB" + "2" * 32, conversation_id="CH" + "0" * 32, channel="xmtp",
                    identity="0x" + "0" * 40, consent="unknown", attributes={}, joined_at=NOW))


class TestTransactions:
    async def test_a_failed_transaction_leaves_nothing_behind(self, store: SqlStore) -> None:
        with pytest.raises(NotFound):
            async with store.transaction() as tx:
                on = await thread(tx)
                await tx.record_inbound(PHONE, PROXY, now=NOW)
                await tx.set_participant_consent(on.phone.id, on.phone.consent)
                raise NotFound("the caller gave up")
        async with store.transaction() as tx:
            assert await tx.get_conversation(on.conversation.id) is None
            assert await tx.get_contact(PHONE, PROXY) is None
            assert await tx.find_phone_participant(PHONE, PROXY) is None

    async def test_a_refused_statement_in_a_store_call_is_a_store_error_without_values(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
        missing = MessageId("IM" + "7" * 32)
        with pytest.raises(StoreError) as caught:
            async with store.transaction() as tx:
                await tx.add_delivery(missing, on.phone.id, Channel.SMS, lane=on.phone.id,
                                      position=0, now=NOW)
        assert missing not in str(caught.value)
        assert missing not in repr(caught.value.__cause__)
        async with store.transaction() as tx:  # the store carries on after the failure
            assert await tx.get_conversation(on.conversation.id) == on.conversation

    async def test_ping_answers_when_the_database_is_up(self, store: SqlStore) -> None:
        await store.ping()

    async def test_an_unreachable_database_is_a_store_error(self, tmp_path: Path) -> None:
        not_a_database = tmp_path / "notes.txt"
        not_a_database.write_bytes(b"these are not the pages of a database " * 200)
        for url in ("postgresql+asyncpg://nobody@127.0.0.1:1/none",
                    f"sqlite+aiosqlite:///{not_a_database}"):
            with pytest.raises(StoreError):
                await open_store(url, keys=KEYS, active_key="k1")
            unmigrated = await open_store(url, keys=KEYS, active_key="k1", migrate=False)
            try:
                with pytest.raises(StoreError):
                    await unmigrated.ping()
            finally:
                await unmigrated.close()

    async def test_errors_do_not_quote_stored_values(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
        with pytest.raises(StoreError) as caught:
            async with store.transaction() as tx:
                await tx.connection.execute(participants.insert().values(
                    id="MB" + "3" * 32, conversation_id=on.conversation.id, channel="sms",
                    address=PHONE, proxy_address=PROXY, consent="unknown", attributes={},
                    joined_at=NOW, active_pair=f"{PHONE} {PROXY}"))
        assert PHONE not in str(caught.value)
        assert PHONE not in repr(caught.value.__cause__)

    async def test_a_task_cancelled_inside_a_transaction_releases_the_database(
            self, store: SqlStore, open_another: OpenStore) -> None:
        entered = asyncio.Event()

        async def stuck() -> None:
            async with store.transaction() as tx:
                await thread(tx)
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(stuck())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for target in (store, await open_another()):  # this process and another one
            async with asyncio.timeout(5), target.transaction() as tx:
                assert await tx.find_phone_participant(PHONE, PROXY) is None
                await thread(tx)
                await tx.remove_participant(
                    (await tx.find_phone_participant(PHONE, PROXY)).id,  # type: ignore[union-attr]
                    now=NOW)
