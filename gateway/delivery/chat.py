"""The chat channel (XMTP through a ``ChatNetwork``): a strategy of the outbox engine.

A message is posted into its conversation's group once, however many wallets it has
(the relay marks every wallet's delivery with the one post), creating the group on first
use. A phone's files follow its text, each as an attachment of its own, fetched,
encrypted and uploaded here, after the webhook was answered (``_post_files``). Sends are
keyed by the message id (a file's by ``<message id>:<n>``): a send whose outcome is
unknown (a dead process, a node that did not answer) is posted again under the same key,
and the chat network publishes the message it prepared the first time, never a second
one (nor does it fetch or upload that file again). So reconciling is posting again, and
a node that does not answer delays a post but never fails it (libxmtp publishes a
prepared message once the node is back).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from gateway.delivery.channel import Attempt
from gateway.domain.clock import Clock, SystemClock
from gateway.domain.ids import ConversationId, WalletAddress
from gateway.domain.models import Channel, DeliveryJob
from gateway.domain.outcomes import Failed, HandBack, Outcome, Retry, Sent
from gateway.domain.ports import ChatNetwork, Store
from gateway.domain.rendering import Rendering
from gateway.domain.rules import RuleBook
from gateway.errors import (
    AttachmentInvalid,
    ChatNetworkError,
    GatewayError,
    MediaFetchFailed,
    MediaRefused,
    WalletNotReachable,
)
from gateway.media.carrier import MediaCarrier, name_of
from gateway.xmtp.writes import group_writes, is_refusal


class _Turns:
    """The turns ``attempt.pace`` gave an attempt's writes (the first has come; the gaps
    say when each later one comes), taken as the writes are made: ``take(n)`` before a
    call that makes ``n`` writes at once waits for the last of their turns."""

    def __init__(self, gaps: Sequence[float]) -> None:
        self._start = asyncio.get_running_loop().time()
        self._offsets = list(itertools.accumulate(gaps, initial=0.0))
        self._taken = 0

    async def take(self, writes: int = 1) -> None:
        last = min(self._taken + writes, len(self._offsets)) - 1
        self._taken += writes
        wait = self._start + self._offsets[last] - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)


GroupMade = Callable[[ConversationId, str, Sequence[WalletAddress]], Awaitable[str]]
LEASE_RESERVE = 5.0  # seconds kept between the last post of a delivery and its lease's end


class ChatChannel:
    name: str = "chat"
    channels: tuple[Channel, ...] = (Channel.XMTP,)
    one_send_per_message: bool = True
    reconcile_settle: float = 0.0  # a keyed post again is safe at once

    def __init__(self, store: Store, chat: ChatNetwork, rules: RuleBook, *,
                 group_made: GroupMade, send_timeout: float = 30.0,
                 sender: str = "xmtp", media: MediaCarrier | None = None,
                 clock: Clock | None = None, give_up_after: int = 5,
                 refusals: Callable[[], int] | None = None,
                 refusal_pause: float = 10.0) -> None:
        """``media``: carries a message's files as attachments (without it they are
        posted as links). ``give_up_after``: attempts after which a file that still
        cannot be fetched is reported and left out, so the rest goes. ``sender``: the
        XMTP identity (its write budget's key). ``refusals``: how many rate-limit
        refusals libxmtp has logged so far (``RefusalWatch.seen``); after one, the
        identity pauses ``refusal_pause`` seconds."""
        self._store = store
        self._chat = chat
        self._rendering = Rendering(rules)
        self._group_made = group_made
        self._send_timeout = send_timeout
        self._sender = sender
        self._media = media
        self._clock = clock or SystemClock()
        self._give_up_after = give_up_after
        self._refusals = refusals
        self._refusal_pause = refusal_pause
        # set once per conversation, never changed: no lookup after the first post
        self._groups: dict[ConversationId, str] = {}

    def sender_of(self, job: DeliveryJob) -> str:
        return self._sender

    async def deliver(self, attempt: Attempt) -> Outcome:
        job = attempt.job
        files = self._media is not None and bool(job.message.media)
        text = self._rendering.for_wallets(job, links=not files)
        refused_before = self._refusals() if self._refusals is not None else 0
        try:
            group_id, members = await self._group_or_members(job)
            # every write takes a turn of the identity's budget: the group's (when it is
            # made now), then a post per text and file
            posts = max(1, bool(text) + (len(job.message.media) if files else 0))
            writes = posts + (group_writes(len(members)) if group_id is None else 0)
            turns = _Turns(await attempt.pace(writes, posts + (group_id is None)))
            if group_id is None:
                await turns.take(group_writes(len(members)))
                group_id = await self._make_group(job, members)
            posted: list[str] = []
            if text or not files:
                await turns.take()
                async with asyncio.timeout(self._send_timeout):
                    posted.append(await self._chat.send(group_id, text, key=job.message.id))
            if files:
                return await self._post_files(job, group_id, posted, turns)
            message_id = posted[0]
        except WalletNotReachable as exc:
            # The group cannot be made: every message waiting in this lane fails the same
            # way, and the phone is told once.
            return Failed(str(exc), whole_lane=True, unreachable=exc.wallet)
        except (ChatNetworkError, TimeoutError) as exc:
            # The node did not answer, or failed, or refused the identity for its rate
            # (429): the message may be prepared already, and libxmtp publishes a prepared
            # message once the node takes it. So it is retried (the same prepared
            # message: a keyed send) as long as it takes, never marked failed while it
            # may still arrive. After a refusal the whole identity waits a while.
            refused = (is_refusal(str(exc)) or (self._refusals is not None
                                                and self._refusals() > refused_before))
            return Retry(str(exc) or "the XMTP send timed out", forever=True,
                         retry_after=self._refusal_pause if refused else None)
        except GatewayError as exc:
            return Retry(str(exc))
        return Sent(message_id)

    async def _post_files(self, job: DeliveryJob, group_id: str, posted: list[str],
                          turns: _Turns) -> Outcome:
        """After the text (if any), each file as its own post, in order, keyed
        ``<message id>:<n>``: one already posted (a retry, a restart) is published again,
        not fetched again. A file that cannot go is left out and reported in one line;
        when none of the message went, it fails (refused) and the phone is told."""
        media = self._media
        assert media is not None and job.lease is not None
        budget = media.budget()
        refused: list[str] = []
        need = timedelta(seconds=self._send_timeout + media.settings.item_seconds + LEASE_RESERVE)
        made: list[int] = []  # files fetched and uploaded in this attempt
        for index, item in enumerate(job.message.media):
            if made and job.lease.until - self._clock.now() < need:
                # the rest goes under a new lease; what went is published again, not made
                return HandBack(self._clock.now())

            async def content(index: int = index) -> bytes:
                made.append(index)
                return await media.group_content(job.message, index, budget)

            name = name_of(item, index)
            await turns.take()
            try:
                async with asyncio.timeout(self._send_timeout + media.settings.item_seconds):
                    posted.append(await self._chat.send_encoded(
                        group_id, content, key=f"{job.message.id}:{index}"))
            except (MediaRefused, AttachmentInvalid) as exc:
                refused.append(f"{name} ({exc})")
            except MediaFetchFailed as exc:
                if exc.retryable and job.delivery.attempts < self._give_up_after:
                    return Retry(f"{name}: {exc}")
                refused.append(f"{name} ({exc})")
        if not posted:
            return Failed("; ".join(refused) or "nothing to post", refused=True)
        note = f"Not delivered to the wallet: {'; '.join(refused)}." if refused else None
        return Sent(posted[0], note=note)

    async def _group_or_members(
            self, job: DeliveryJob) -> tuple[str | None, list[WalletAddress]]:
        """The conversation's group; or, when it has none yet, the wallets to make it
        with."""
        conversation_id = job.conversation.id
        known = self._groups.get(conversation_id) or job.conversation.xmtp_group_id
        if known:
            self._groups[conversation_id] = known
            return known, []
        async with self._store.transaction() as tx:
            conversation = await tx.get_conversation(conversation_id)
            members = [p.identity for p in await tx.list_participants(conversation_id)
                       if p.identity is not None]
        if conversation is not None and conversation.xmtp_group_id:
            self._groups[conversation_id] = conversation.xmtp_group_id
            return conversation.xmtp_group_id, []
        return None, members

    async def _make_group(self, job: DeliveryJob, members: Sequence[WalletAddress]) -> str:
        conversation_id = job.conversation.id
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
