"""A claim whose transaction rolls back hands nothing to the lanes: the rows are pending
again, and the next claim is the only one that sends them."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.domain.clock import SystemClock
from gateway.domain.ids import PhoneNumber
from gateway.domain.models import Channel, MessageSource
from gateway.domain.policy import OutboundPolicy
from gateway.domain.ports import NewMessage, NewParticipant, OutboundText, SentText, Store
from gateway.store import open_store
from gateway.twilio.outbox import OutboxSettings, PhoneOutbox

PHONE = PhoneNumber("+14155550123")
OURS = PhoneNumber("+12025550123")


class CommitFailsOnce:
    """A store whose next transaction fails at commit (and so rolls back)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.fail_next = False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self.inner.transaction() as tx:
            yield tx
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("commit failed")


class RecordingPhone:
    def __init__(self) -> None:
        self.sent: list[str | None] = []

    async def send(self, text: OutboundText) -> SentText:
        self.sent.append(text.body)
        return SentText(provider_id="SM" + secrets.token_hex(16), status="queued")

    async def find_sent(self, **_: Any) -> SentText | None:
        return None


class TestClaimRollback:
    async def test_a_rolled_back_claim_sends_nothing_and_the_next_sends_once(self) -> None:
        store = await open_store("sqlite+aiosqlite:///:memory:",
                                 keys={"k1": secrets.token_bytes(32)}, active_key="k1")
        now = datetime.now(UTC)
        async with store.transaction() as tx:
            conversation = await tx.create_conversation(rule="support", now=now)
            phone = await tx.add_participant(NewParticipant(
                conversation.id, Channel.SMS, address=PHONE, proxy_address=OURS), now=now)
            await tx.record_inbound(PHONE, OURS, now=now)
            message = await tx.add_message(NewMessage(
                conversation.id, None, "hello", MessageSource.XMTP, external_id="x1"), now=now)
            await tx.add_delivery(message.id, phone.id, Channel.SMS, now=now)

        flaky, sent = CommitFailsOnce(store), RecordingPhone()

        async def on_failed(*_: Any) -> None:
            raise AssertionError("nothing should fail")

        outbox = PhoneOutbox(
            flaky, sent, SystemClock(),  # type: ignore[arg-type]
            OutboxSettings(rate_per_second=50, lease=30, send_timeout=2),
            status_callback_url=None, policy_for=lambda _rule: OutboundPolicy(),
            render=lambda job: job.message.body or "", on_failed=on_failed)
        flaky.fail_next = True
        with pytest.raises(RuntimeError):
            await outbox.run_once()
        await outbox.drain()
        assert sent.sent == []
        assert await outbox.run_once() == 1
        assert sent.sent == ["hello"]
        await store.close()
