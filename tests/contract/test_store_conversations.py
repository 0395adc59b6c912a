"""Store contract: conversations, participants and the active (address, proxy) pair."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.domain.ids import ConversationId, ParticipantId
from gateway.domain.models import Channel, Consent, ConversationState, Participant
from gateway.domain.ports import NewParticipant
from gateway.errors import ActivePairConflict, BadRequest, Conflict, NotFound
from gateway.store import SqlStore
from tests.contract.scenario import (
    LATER,
    NOW,
    OTHER_PHONE,
    OTHER_WALLET,
    PHONE,
    PROXY,
    WALLET,
    thread,
)


def phone_in(conversation_id: ConversationId, phone: str = PHONE) -> NewParticipant:
    return NewParticipant(conversation_id, Channel.SMS, address=phone,  # type: ignore[arg-type]
                          proxy_address=PROXY)


def by_id(found: list[Participant]) -> list[Participant]:
    return sorted(found, key=lambda p: p.id)


class TestConversations:
    async def test_a_created_conversation_reads_back_as_written(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            created = await tx.create_conversation(
                rule="support", friendly_name="Support", unique_name="support-1",
                attributes={"tier": "gold", "n": [1, 2]}, now=NOW)
        async with store.transaction() as tx:
            assert await tx.get_conversation(created.id) == created
            assert await tx.get_conversation_by_unique_name("support-1") == created
        assert created.state is ConversationState.ACTIVE
        assert created.attributes == {"tier": "gold", "n": [1, 2]}
        assert created.created_at == NOW and created.created_at.tzinfo is not None
        assert created.last_message_at is None and created.xmtp_group_id is None

    async def test_missing_conversations_read_as_none(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            assert await tx.get_conversation(ConversationId("CH" + "0" * 32)) is None
            assert await tx.get_conversation_by_unique_name("nope") is None
            assert await tx.get_conversation_by_group("nope") is None

    async def test_a_taken_unique_name_is_a_conflict(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            await tx.create_conversation(rule=None, unique_name="taken", now=NOW)
        with pytest.raises(Conflict):
            async with store.transaction() as tx:
                await tx.create_conversation(rule=None, unique_name="taken", now=NOW)
        async with store.transaction() as tx:  # unnamed conversations never collide
            first = await tx.create_conversation(rule=None, now=NOW)
            second = await tx.create_conversation(rule=None, now=NOW)
        assert first.id != second.id

    async def test_a_group_maps_to_its_conversation(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            conversation = await tx.create_conversation(rule=None, now=NOW)
            other = await tx.create_conversation(rule=None, now=NOW)
            await tx.set_conversation_group(conversation.id, "group-1")
            found = await tx.get_conversation_by_group("group-1")
            assert found is not None and found.id == conversation.id
            assert found.xmtp_group_id == "group-1"
            with pytest.raises(Conflict):
                await tx.set_conversation_group(other.id, "group-1")
            with pytest.raises(NotFound):
                await tx.set_conversation_group(ConversationId("CH" + "0" * 32), "group-2")

    async def test_a_group_once_set_is_never_replaced(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            conversation = await tx.create_conversation(rule=None, now=NOW)
            await tx.set_conversation_group(conversation.id, "group-first")
            await tx.set_conversation_group(conversation.id, "group-first")  # idempotent
            with pytest.raises(Conflict):
                await tx.set_conversation_group(conversation.id, "group-second")
            kept = await tx.get_conversation(conversation.id)
            assert kept is not None and kept.xmtp_group_id == "group-first"
            assert await tx.get_conversation_by_group("group-second") is None

    async def test_state_changes_are_recorded(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            conversation = await tx.create_conversation(rule=None, now=NOW)
            closed = await tx.set_conversation_state(
                conversation.id, ConversationState.CLOSED, now=LATER)
            assert closed.state is ConversationState.CLOSED and closed.updated_at == LATER
            again = await tx.get_conversation(conversation.id)
            assert again is not None and again.state is ConversationState.CLOSED
            with pytest.raises(NotFound):
                await tx.set_conversation_state(ConversationId("CH" + "0" * 32),
                                                ConversationState.CLOSED, now=LATER)


class TestParticipants:
    async def test_participants_read_back_and_list_in_join_order(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            assert await tx.get_participant(on.phone.id) == on.phone
            assert by_id(await tx.list_participants(on.conversation.id)) == by_id(
                [on.phone, on.wallet])
            late = await tx.add_participant(NewParticipant(
                on.conversation.id, Channel.XMTP, identity=OTHER_WALLET), now=LATER)
            assert (await tx.list_participants(on.conversation.id))[-1] == late
        assert on.phone.address == PHONE and on.phone.proxy_address == PROXY
        assert on.phone.identity is None and not on.phone.is_chat
        assert on.wallet.identity == WALLET and on.wallet.is_chat
        assert on.wallet.address is None and on.wallet.consent is Consent.UNKNOWN

    async def test_a_participant_must_have_the_fields_of_its_channel(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            conversation = await tx.create_conversation(rule=None, now=NOW)
            with pytest.raises(BadRequest):
                await tx.add_participant(NewParticipant(conversation.id, Channel.XMTP), now=NOW)
            with pytest.raises(BadRequest):
                await tx.add_participant(NewParticipant(
                    conversation.id, Channel.SMS, address=PHONE), now=NOW)

    async def test_a_participant_of_a_missing_conversation_is_not_found(
            self, store: SqlStore) -> None:
        with pytest.raises(NotFound):
            async with store.transaction() as tx:
                await tx.add_participant(phone_in(ConversationId("CH" + "0" * 32)), now=NOW)

    async def test_a_phone_is_found_by_its_pair_in_its_active_conversation(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            assert await tx.find_phone_participant(PHONE, PROXY) == on.phone
            assert await tx.find_phone_participant(OTHER_PHONE, PROXY) is None
            assert await tx.find_phone_participant(PROXY, PHONE) is None

    async def test_a_pair_in_an_active_conversation_cannot_join_another(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            other = await tx.create_conversation(rule=None, now=NOW)
        with pytest.raises(ActivePairConflict) as caught:
            async with store.transaction() as tx:
                await tx.add_participant(phone_in(other.id), now=NOW)
        assert caught.value.conversation_id == on.conversation.id
        async with store.transaction() as tx:  # another phone on the same proxy is fine
            await tx.add_participant(phone_in(other.id, OTHER_PHONE), now=NOW)

    @pytest.mark.parametrize("state", [ConversationState.CLOSED, ConversationState.INACTIVE])
    async def test_closing_or_deactivating_frees_the_pair(
            self, store: SqlStore, state: ConversationState) -> None:
        async with store.transaction() as tx:
            old = await thread(tx)
            await tx.set_conversation_state(old.conversation.id, state, now=LATER)
            assert await tx.find_phone_participant(PHONE, PROXY) is None
            new = await tx.create_conversation(rule=None, now=LATER)
            joined = await tx.add_participant(phone_in(new.id), now=LATER)
            assert await tx.find_phone_participant(PHONE, PROXY) == joined

    async def test_leaving_frees_the_pair(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            old = await thread(tx)
            await tx.remove_participant(old.phone.id, now=LATER)
            assert await tx.find_phone_participant(PHONE, PROXY) is None
            left = await tx.get_participant(old.phone.id)
            assert left is not None and left.left_at == LATER and not left.active
            assert await tx.list_participants(old.conversation.id) == [old.wallet]
            assert by_id(await tx.list_participants(old.conversation.id, include_left=True)) == (
                by_id([left, old.wallet]))
            new = await tx.create_conversation(rule=None, now=LATER)
            await tx.add_participant(phone_in(new.id), now=LATER)

    async def test_removing_twice_keeps_the_first_departure(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            await tx.remove_participant(on.phone.id, now=LATER)
            await tx.remove_participant(on.phone.id, now=LATER + timedelta(hours=1))
            left = await tx.get_participant(on.phone.id)
            assert left is not None and left.left_at == LATER
            with pytest.raises(NotFound):
                await tx.remove_participant(ParticipantId("MB" + "0" * 32), now=LATER)

    async def test_reactivating_takes_the_pair_back(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            await tx.set_conversation_state(on.conversation.id, ConversationState.INACTIVE,
                                            now=LATER)
            await tx.set_conversation_state(on.conversation.id, ConversationState.ACTIVE,
                                            now=LATER)
            assert await tx.find_phone_participant(PHONE, PROXY) == on.phone

    async def test_reactivating_fails_when_another_conversation_took_the_pair(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            old = await thread(tx)
            await tx.set_conversation_state(old.conversation.id, ConversationState.CLOSED,
                                            now=LATER)
            new = await thread(tx, wallet=OTHER_WALLET)
        with pytest.raises(ActivePairConflict) as caught:
            async with store.transaction() as tx:
                await tx.set_conversation_state(old.conversation.id, ConversationState.ACTIVE,
                                                now=LATER)
        assert caught.value.conversation_id == new.conversation.id
        async with store.transaction() as tx:
            still = await tx.get_conversation(old.conversation.id)
            assert still is not None and still.state is ConversationState.CLOSED

    async def test_a_phone_added_to_a_closed_conversation_holds_no_pair(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            closed = await tx.create_conversation(rule=None, now=NOW)
            await tx.set_conversation_state(closed.id, ConversationState.CLOSED, now=NOW)
            await tx.add_participant(phone_in(closed.id), now=NOW)
            assert await tx.find_phone_participant(PHONE, PROXY) is None
            await thread(tx)

    async def test_a_wallet_is_in_a_conversation_once_until_it_leaves(
            self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
        with pytest.raises(Conflict):
            async with store.transaction() as tx:
                await tx.add_participant(NewParticipant(
                    on.conversation.id, Channel.XMTP, identity=WALLET), now=NOW)
        async with store.transaction() as tx:
            await tx.remove_participant(on.wallet.id, now=LATER)
            back = await tx.add_participant(NewParticipant(
                on.conversation.id, Channel.XMTP, identity=WALLET), now=LATER)
            assert back.id != on.wallet.id
            other = await thread(tx, phone=OTHER_PHONE)  # the same wallet, elsewhere
            assert other.wallet.identity == WALLET

    async def test_consent_is_recorded(self, store: SqlStore) -> None:
        async with store.transaction() as tx:
            on = await thread(tx)
            await tx.set_participant_consent(on.phone.id, Consent.DENIED)
            denied = await tx.get_participant(on.phone.id)
            assert denied is not None and denied.consent is Consent.DENIED
            with pytest.raises(NotFound):
                await tx.set_participant_consent(ParticipantId("MB" + "0" * 32),
                                                 Consent.ALLOWED)
