"""The chat channel (XMTP through a ``ChatNetwork``): a strategy of the outbox engine.

A message is posted into its conversation's group once, however many wallets it has
(the relay marks every wallet's delivery with the one post), creating the group on first
use. Sends are keyed by the message id: a send whose outcome is unknown (a dead process,
a node that did not answer) is posted again under the same key, and the chat network
publishes the message it prepared the first time, never a second one. So reconciling is
posting again, and a node that does not answer delays a post but never fails it (libxmtp
publishes a prepared message once the node is back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from gateway.delivery.channel import Attempt
from gateway.domain.ids import ConversationId, WalletAddress
from gateway.domain.models import Channel, DeliveryJob
from gateway.domain.outcomes import Failed, Outcome, Retry, Sent
from gateway.domain.ports import ChatNetwork, Store
from gateway.domain.rendering import Rendering
from gateway.domain.rules import RuleBook
from gateway.errors import ChatNetworkError, GatewayError, WalletNotReachable

GroupMade = Callable[[ConversationId, str, Sequence[WalletAddress]], Awaitable[str]]


class ChatChannel:
    name: str = "chat"
    channels: tuple[Channel, ...] = (Channel.XMTP,)
    one_send_per_message: bool = True
    reconcile_settle: float = 0.0  # a keyed post again is safe at once

    def __init__(self, store: Store, chat: ChatNetwork, rules: RuleBook, *,
                 group_made: GroupMade, send_timeout: float = 30.0,
                 sender: str = "xmtp") -> None:
        self._store = store
        self._chat = chat
        self._rendering = Rendering(rules)
        self._group_made = group_made
        self._send_timeout = send_timeout
        self._sender = sender
        # set once per conversation, never changed: no lookup after the first post
        self._groups: dict[ConversationId, str] = {}

    def sender_of(self, job: DeliveryJob) -> str:
        return self._sender

    async def deliver(self, attempt: Attempt) -> Outcome:
        job = attempt.job
        try:
            group_id = await self._group_of(job)
            await attempt.pace(1)
            async with asyncio.timeout(self._send_timeout):
                message_id = await self._chat.send(
                    group_id, self._rendering.for_wallets(job), key=job.message.id)
        except WalletNotReachable as exc:
            # The group cannot be made: every message waiting in this lane fails the same
            # way, and the phone is told once.
            return Failed(str(exc), whole_lane=True, unreachable=exc.wallet)
        except (ChatNetworkError, TimeoutError) as exc:
            # The node did not answer, or failed: the message may be prepared already, and
            # libxmtp publishes a prepared message once the node answers again. So it is
            # retried (the same prepared message: a keyed send) as long as it takes,
            # never marked failed while it may still arrive.
            return Retry(str(exc) or "the XMTP send timed out", forever=True)
        except GatewayError as exc:
            return Retry(str(exc))
        return Sent(message_id)

    async def _group_of(self, job: DeliveryJob) -> str:
        conversation_id = job.conversation.id
        known = self._groups.get(conversation_id) or job.conversation.xmtp_group_id
        if known:
            self._groups[conversation_id] = known
            return known
        async with self._store.transaction() as tx:
            conversation = await tx.get_conversation(conversation_id)
            members = [p.identity for p in await tx.list_participants(conversation_id)
                       if p.identity is not None]
        if conversation is not None and conversation.xmtp_group_id:
            self._groups[conversation_id] = conversation.xmtp_group_id
            return conversation.xmtp_group_id
        group_id, left_out = await self._create_group(job.conversation.friendly_name or "",
                                                      members, key=conversation_id)
        group_id = await self._group_made(conversation_id, group_id, left_out)
        self._groups[conversation_id] = group_id
        return group_id

    async def _create_group(self, name: str, members: Sequence[WalletAddress], *,
                            key: str) -> tuple[str, list[WalletAddress]]:
        """The group with every member on XMTP; those who are not are left out (and
        returned). Raises ``WalletNotReachable`` when none is. Keyed by the conversation:
        a creation retried after this process died returns the group made before."""
        left_out: list[WalletAddress] = []
        while True:
            joining = [m for m in members if m not in left_out]
            try:
                return (await self._chat.create_group(name=name, members=joining, key=key),
                        left_out)
            except WalletNotReachable as exc:
                if len(joining) <= 1 or WalletAddress(exc.wallet) not in joining:
                    raise
                left_out.append(WalletAddress(exc.wallet))
