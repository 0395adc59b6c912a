"""The API's operations: each checks, talks to the chat network when it must, and writes
its change and the event announcing it in one transaction.

Chat-network calls happen outside database transactions (a slow XMTP call must not hold
SQLite's write lock) and before the write they justify, so a failed call leaves nothing
half-recorded: at worst an empty group, or a wallet already in a group it was meant to
join, both harmless and repaired by the next attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.api import errors as api_errors
from gateway.api.hub import EventHub
from gateway.api.refs import is_conversation_id
from gateway.api.views import conversation_json, participant_json
from gateway.domain.clock import Clock
from gateway.domain.ids import (
    ConversationId,
    MessageId,
    ParticipantId,
    PhoneNumber,
    WalletAddress,
)
from gateway.domain.models import (
    Channel,
    Consent,
    Conversation,
    ConversationState,
    Delivery,
    Media,
    Message,
    Participant,
)
from gateway.domain.phones import parse_e164
from gateway.domain.ports import ApiQueries, ChatNetwork, NewParticipant, Store, StoreTx
from gateway.domain.relay import Relay
from gateway.domain.rules import normalize_address
from gateway.errors import BadRequest, Conflict, WalletNotReachable

log = logging.getLogger(__name__)

# Where a conversation may go from each state; staying put is always allowed.
_TRANSITIONS = {
    ConversationState.ACTIVE: {ConversationState.INACTIVE, ConversationState.CLOSED},
    ConversationState.INACTIVE: {ConversationState.ACTIVE, ConversationState.CLOSED},
    ConversationState.CLOSED: set[ConversationState](),
}

DEFAULT_GROUP_NAME = "Conversation"


@dataclass(frozen=True, slots=True)
class ConversationChanges:
    """A partial update: only the fields in ``given`` change."""

    given: frozenset[str]
    friendly_name: str | None = None
    unique_name: str | None = None
    attributes: Mapping[str, Any] | None = None
    state: ConversationState | None = None


class ConversationService:
    def __init__(
        self, *, store: Store, queries: ApiQueries, chat: ChatNetwork, clock: Clock,
        routes: frozenset[tuple[PhoneNumber, Channel]], hub: EventHub, relay: Relay,
        gateway_wallet: WalletAddress | None = None,
    ) -> None:
        self._store = store
        self._queries = queries
        self._chat = chat
        self._clock = clock
        self._routes = routes
        self._proxies = frozenset(proxy for proxy, _channel in routes)
        self._gateway_wallet = gateway_wallet
        self._hub = hub
        self._relay = relay

    # ---- conversations ----------------------------------------------------------------

    async def create_conversation(
        self, *, friendly_name: str | None, unique_name: str | None,
        attributes: Mapping[str, Any],
    ) -> Conversation:
        """Creates the conversation and, first, its XMTP group (the gateway alone until
        wallets join)."""
        if unique_name is not None:
            async with self._store.transaction() as tx:
                if await tx.get_conversation_by_unique_name(unique_name) is not None:
                    raise api_errors.UniqueNameTaken(f"unique_name {unique_name!r} is taken")
        group_id = await self._chat.create_group(
            name=friendly_name or unique_name or DEFAULT_GROUP_NAME, members=[])
        now = self._clock.now()
        try:
            async with self._store.transaction() as tx:
                conversation = await tx.create_conversation(
                    rule=None, friendly_name=friendly_name, unique_name=unique_name,
                    attributes=attributes, now=now)
                await tx.set_conversation_group(conversation.id, group_id)
                conversation = await _conversation(tx, conversation.id)
                await tx.add_event("conversation.added", conversation_id=conversation.id,
                                   data={"conversation": conversation_json(conversation)},
                                   now=now)
        except Conflict:
            # lost a race for the unique name; the empty group stays behind, unused
            raise api_errors.UniqueNameTaken(f"unique_name {unique_name!r} is taken") from None
        self._hub.notify()
        return conversation

    async def get_conversation(self, ref: str) -> Conversation:
        async with self._store.transaction() as tx:
            return await resolve(tx, ref)

    async def update_conversation(self, ref: str, changes: ConversationChanges) -> Conversation:
        """Applies the fields whose value differs; ``conversation.updated`` lists just
        those, and a request that changes nothing writes nothing and announces nothing."""
        await self._rename_group(ref, changes)
        now = self._clock.now()
        try:
            async with self._store.transaction() as tx:
                conversation = await resolve(tx, ref)
                renames = {name: getattr(changes, name)
                           for name in ("friendly_name", "unique_name", "attributes")
                           if name in changes.given
                           and getattr(changes, name) != getattr(conversation, name)}
                changed: set[str] = set(renames)
                if changes.state is not None and changes.state is not conversation.state:
                    _check_transition(conversation, changes.state)
                    changed.add("state")
                if not changed:
                    return conversation
                if renames:
                    conversation = await self._queries.update_conversation(
                        tx, conversation.id, now=now, **renames)
                if changes.state is not None and "state" in changed:
                    conversation = await tx.set_conversation_state(
                        conversation.id, changes.state, now=now)
                await tx.add_event("conversation.updated", conversation_id=conversation.id,
                                   data={"conversation": conversation_json(conversation),
                                         "changed": sorted(changed)}, now=now)
        except Conflict:
            raise api_errors.UniqueNameTaken(
                f"unique_name {changes.unique_name!r} is taken") from None
        self._hub.notify()
        return conversation

    async def event_scope(self, ref: str) -> ConversationId:
        """The conversation whose events a stream filters on. A deleted one still counts
        while the log holds its ``conversation.removed`` (a client resuming its stream
        must still get that event); any other unknown reference is not found."""
        try:
            return (await self.get_conversation(ref)).id
        except api_errors.ConversationNotFound:
            if is_conversation_id(ref):
                conversation_id = ConversationId(ref)
                if await self._queries.list_events(after=0, limit=1,
                                                   conversation_id=conversation_id):
                    return conversation_id
            raise

    async def _rename_group(self, ref: str, changes: ConversationChanges) -> None:
        """A new friendly_name renames the conversation's XMTP group first, as members
        join and leave first: a chat network failure answers 502 with nothing recorded.
        The update's own refusals are checked before, so a refused update leaves the
        group alone. (Should the write still fail, the group already has the new name;
        repeating the update, as after any error, makes the two agree again.)"""
        if "friendly_name" not in changes.given:
            return
        async with self._store.transaction() as tx:
            conversation = await resolve(tx, ref)
            group_id = conversation.xmtp_group_id
            if group_id is None or changes.friendly_name == conversation.friendly_name:
                return
            if changes.state is not None and changes.state is not conversation.state:
                _check_transition(conversation, changes.state)
            unique_name = conversation.unique_name
            if "unique_name" in changes.given:
                unique_name = changes.unique_name
                holder = (await tx.get_conversation_by_unique_name(unique_name)
                          if unique_name is not None else None)
                if holder is not None and holder.id != conversation.id:
                    raise api_errors.UniqueNameTaken(f"unique_name {unique_name!r} is taken")
        # named as at creation
        await self._chat.rename_group(
            group_id, changes.friendly_name or unique_name or DEFAULT_GROUP_NAME)

    async def delete_conversation(self, ref: str) -> None:
        """Deletes the conversation; its wallets are first removed from its group."""
        async with self._store.transaction() as tx:
            conversation = await resolve(tx, ref)
            wallets = [p.identity for p in await tx.list_participants(conversation.id)
                       if p.identity is not None]
        if wallets and conversation.xmtp_group_id is not None:
            await self._chat.remove_members(conversation.xmtp_group_id, wallets)
        async with self._store.transaction() as tx:
            await self._queries.delete_conversation(
                tx, conversation.id, now=self._clock.now(),
                removed_event={"conversation_id": conversation.id,
                               "conversation": conversation_json(conversation)})
        self._hub.notify()

    # ---- participants -----------------------------------------------------------------

    async def add_chat_participant(
        self, ref: str, *, identity: str, attributes: Mapping[str, Any],
    ) -> Participant:
        wallet = normalize_address(identity)
        if wallet is None:
            raise api_errors.InvalidIdentity("identity must be a wallet address (0x + 40 hex)")
        if wallet == self._gateway_wallet:
            raise api_errors.IdentityIsGateway(
                "identity is the gateway's own wallet, which is in every conversation's "
                "group already")
        async with self._store.transaction() as tx:
            conversation = await _open_conversation(tx, ref)
            if any(p.identity == wallet for p in await tx.list_participants(conversation.id)):
                raise api_errors.AlreadyParticipant(
                    f"{wallet} is already a participant of this conversation")
        if not await self._chat.is_reachable(wallet):
            raise WalletNotReachable(wallet)
        group_id = conversation.xmtp_group_id
        if group_id is None:
            # conversations made before their group (or whose group creation failed)
            group_id = await self._chat.create_group(
                name=conversation.friendly_name or DEFAULT_GROUP_NAME, members=[wallet])
        else:
            await self._chat.add_members(group_id, [wallet])
        now = self._clock.now()
        try:
            async with self._store.transaction() as tx:
                conversation = await _open_conversation(tx, conversation.id)
                if conversation.xmtp_group_id is None:
                    await tx.set_conversation_group(conversation.id, group_id)
                stored_group = conversation.xmtp_group_id
                participant = await tx.add_participant(NewParticipant(
                    conversation_id=conversation.id, channel=Channel.XMTP, identity=wallet,
                    consent=Consent.ALLOWED, attributes=attributes), now=now)
                await tx.add_event("participant.added", conversation_id=conversation.id,
                                   data={"participant": participant_json(participant)},
                                   now=now)
        except Conflict:
            raise api_errors.AlreadyParticipant(
                f"{wallet} is already a participant of this conversation") from None
        if stored_group is not None and stored_group != group_id:
            # A worker gave the conversation its group while this one was being made:
            # the wallet joins the group that counts.
            await self._chat.add_members(stored_group, [wallet])
        self._hub.notify()
        return participant

    async def add_phone_participant(
        self, ref: str, *, address: str, proxy_address: str, channel: Channel,
        attributes: Mapping[str, Any],
    ) -> Participant:
        phone = _phone(address, "address")
        proxy = _phone(proxy_address, "proxy_address")
        if proxy not in self._proxies:
            raise api_errors.ProxyNotOurs(
                f"proxy_address {proxy} is not one of the gateway's numbers")
        if (proxy, channel) not in self._routes:
            served = sorted(ch.value for number, ch in self._routes if number == proxy)
            raise api_errors.ProxyNotOurs(
                f"proxy_address {proxy} is not served on {channel.value} by any "
                f"rule (only on {', '.join(served)})")
        if phone == proxy:
            raise api_errors.AddressIsProxy("address and proxy_address must differ")
        if phone in self._proxies:
            # the gateway would be texting itself
            raise api_errors.AddressIsProxy(
                f"address {phone} is one of the gateway's own numbers")
        now = self._clock.now()
        async with self._store.transaction() as tx:
            conversation = await _open_conversation(tx, ref)
            contact = await tx.get_contact(phone, proxy, channel)
            # ActivePairConflict (its own code) propagates from here
            participant = await tx.add_participant(NewParticipant(
                conversation_id=conversation.id, channel=channel, address=phone,
                proxy_address=proxy,
                consent=contact.consent if contact is not None else Consent.UNKNOWN,
                attributes=attributes), now=now)
            await tx.add_event("participant.added", conversation_id=conversation.id,
                               data={"participant": participant_json(participant)}, now=now)
        self._hub.notify()
        return participant

    async def list_participants(self, ref: str, *, include_left: bool) -> list[Participant]:
        async with self._store.transaction() as tx:
            conversation = await resolve(tx, ref)
            return await tx.list_participants(conversation.id, include_left=include_left)

    async def get_participant(self, ref: str, participant_id: str) -> Participant:
        async with self._store.transaction() as tx:
            conversation = await resolve(tx, ref)
            return await _participant(tx, conversation, participant_id)

    async def remove_participant(self, ref: str, participant_id: str) -> None:
        """A wallet also leaves the conversation's XMTP group."""
        async with self._store.transaction() as tx:
            conversation = await resolve(tx, ref)
            participant = await _participant(tx, conversation, participant_id)
        if not participant.active:
            return
        if participant.identity is not None and conversation.xmtp_group_id is not None:
            await self._chat.remove_members(conversation.xmtp_group_id, [participant.identity])
        now = self._clock.now()
        async with self._store.transaction() as tx:
            await tx.remove_participant(participant.id, now=now)
            left = await tx.get_participant(participant.id)
            assert left is not None
            await tx.add_event("participant.removed", conversation_id=conversation.id,
                               data={"participant": participant_json(left)}, now=now)
        self._hub.notify()

    # ---- messages ---------------------------------------------------------------------

    async def send_message(
        self, ref: str, *, author: str | None, body: str | None, media_urls: Sequence[str],
        attributes: Mapping[str, Any],
    ) -> Message:
        """Records the message and its deliveries to every other participant, on their
        own channels, through the relay: the same outbox and the same events as bridged
        messages."""
        if not (body and body.strip()) and not media_urls:
            raise api_errors.EmptyMessage("a message needs a body or media_url")

        async def prepare(tx: StoreTx) -> tuple[Conversation, ParticipantId | None]:
            conversation = await _open_conversation(tx, ref)
            return conversation, await _author(tx, conversation, author)

        message = await self._relay.post(prepare, body=body,
                                         media=[Media(url) for url in media_urls],
                                         attributes=dict(attributes))
        self._hub.notify()
        return message

    async def get_message(self, ref: str, message_id: str) -> tuple[Message, list[Delivery]]:
        async with self._store.transaction() as tx:
            conversation = await resolve(tx, ref)
            message = await tx.get_message(MessageId(message_id))
            if message is None or message.conversation_id != conversation.id:
                raise api_errors.MessageNotFound(f"no message {message_id} in this conversation")
            return message, await tx.list_deliveries(message.id)


# ---- lookups shared by the operations -----------------------------------------------------


async def resolve(tx: StoreTx, ref: str) -> Conversation:
    """A conversation by id or, failing that, by unique name (as Twilio resolves both)."""
    conversation = None
    if is_conversation_id(ref):
        conversation = await tx.get_conversation(ConversationId(ref))
    if conversation is None:
        conversation = await tx.get_conversation_by_unique_name(ref)
    if conversation is None:
        raise api_errors.ConversationNotFound(f"no conversation {ref!r}")
    return conversation


async def _conversation(tx: StoreTx, conversation_id: ConversationId) -> Conversation:
    conversation = await tx.get_conversation(conversation_id)
    if conversation is None:
        raise api_errors.ConversationNotFound(f"no conversation {conversation_id!r}")
    return conversation


def _check_transition(conversation: Conversation, state: ConversationState) -> None:
    if state not in _TRANSITIONS[conversation.state]:
        raise api_errors.InvalidStateTransition(
            f"a conversation cannot go from {conversation.state.value} to {state.value}")


async def _open_conversation(tx: StoreTx, ref: str) -> Conversation:
    conversation = await resolve(tx, ref)
    if conversation.state is ConversationState.CLOSED:
        raise api_errors.ConversationClosed("the conversation is closed")
    return conversation


async def _participant(tx: StoreTx, conversation: Conversation, participant_id: str) -> Participant:
    participant = await tx.get_participant(ParticipantId(participant_id))
    if participant is None or participant.conversation_id != conversation.id:
        raise api_errors.ParticipantNotFound(
            f"no participant {participant_id} in this conversation")
    return participant


async def _author(
    tx: StoreTx, conversation: Conversation, author: str | None,
) -> ParticipantId | None:
    """``author`` names an active participant by id, wallet or phone; None is the API."""
    if author is None:
        return None
    wallet = normalize_address(author)
    for p in await tx.list_participants(conversation.id):
        if author in (p.id, p.address) or (wallet is not None and p.identity == wallet):
            return p.id
    raise api_errors.AuthorNotParticipant(
        "author must be an active participant of the conversation (id, identity or address)")


def _phone(raw: str, field: str) -> PhoneNumber:
    """Exact E.164 only: a program calls the API, and a number it sends otherwise is a
    bug to show it, not input to tidy up. The answer shows the caller's own input as
    given; the log (should it ever hold it) masks it."""
    try:
        return parse_e164(raw)
    except BadRequest as exc:
        raise api_errors.InvalidAddress(f"{field} {raw!r} is {exc}") from None
