"""The gateway end to end on its phone side: signed webhooks from the Twilio simulator,
the relay, the outbox worker sending through the real twilio library, status callbacks.
The chat side is a recording fake here (tests/e2e runs real libxmtp wallets)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from gateway.appkeys import METRICS
from gateway.domain.models import Consent, DeliveryState, MessageSource
from gateway.domain.rules import short_address
from gateway.testing.twilio_sim import Fault
from tests.integration.bridge_harness import (
    ALICE,
    BOB,
    CAROL,
    DIAL,
    PHONE,
    PHONE_2,
    SUPPORT,
    TEAM,
    Bridge,
    eventually,
    post_form,
    running_bridge,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def bridge(tmp_path: Path):
    async with running_bridge(tmp_path) as bridge:
        yield bridge


async def _count_events(bridge: Bridge, kind: str) -> int:
    engine = bridge.store.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(
            "SELECT count(*) FROM events WHERE type = :t"), {"t": kind})).scalar_one())


async def _count_messages(bridge: Bridge, source: str = "sms") -> int:
    async with bridge.store.transaction() as tx:
        participant = await tx.find_phone_participant(PHONE, SUPPORT)
        assert participant is not None
        engine = bridge.store.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(
            "SELECT count(*) FROM messages WHERE conversation_id = :c AND source = :s"),
            {"c": participant.conversation_id, "s": source})).scalar_one())


class TestInboundSms:
    async def test_a_text_reaches_the_rules_wallet_in_a_group_named_after_the_phone(
            self, bridge: Bridge) -> None:
        result = await bridge.text(PHONE, SUPPORT, "hello, is anyone there?")
        assert result.status == 200
        assert "<Response></Response>" in result.body
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        assert bridge.chat.groups[group].name == "SMS · +1 555-123-0001 → +1 555-010-0001"
        await eventually(lambda: "hello, is anyone there?" in bridge.sent_to(group))

    async def test_duplicate_message_sid_is_recorded_once(self, bridge: Bridge) -> None:
        first = await bridge.text(PHONE, SUPPORT, "once", sid="SM" + "1" * 32)
        again = await bridge.text(PHONE, SUPPORT, "once", sid="SM" + "1" * 32)
        assert (first.status, again.status) == (200, 200)
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        await eventually(lambda: bridge.sent_to(group) == ["once"])
        assert await _count_messages(bridge) == 1

    async def test_a_second_phone_gets_its_own_group(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "from one")
        await bridge.text(PHONE_2, SUPPORT, "from two")
        await eventually(lambda: len(bridge.chat.sent) >= 2)
        names = sorted(g.name for g in bridge.chat.groups.values())
        assert names == ["SMS · +1 555-123-0001 → +1 555-010-0001",
                         "SMS · +1 555-123-0002 → +1 555-010-0001"]

    async def test_whatsapp_text_opens_a_whatsapp_conversation(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hola", channel="whatsapp")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        assert bridge.chat.groups[group].name == "WhatsApp · +1 555-123-0001 → +1 555-010-0001"

    async def test_the_same_phone_on_sms_and_whatsapp_is_two_conversations(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "on whatsapp", channel="whatsapp")
        await bridge.text(PHONE, SUPPORT, "by sms")
        groups = await eventually(lambda: len(bridge.chat.groups) == 2
                                  and {g.name: g.id for g in bridge.chat.groups.values()})
        sms = groups["SMS · +1 555-123-0001 → +1 555-010-0001"]
        whatsapp = groups["WhatsApp · +1 555-123-0001 → +1 555-010-0001"]
        await eventually(lambda: bridge.sent_to(sms) == ["by sms"]
                         and bridge.sent_to(whatsapp) == ["on whatsapp"])
        await bridge.text(PHONE, SUPPORT, "STOP")  # SMS only: WhatsApp still reaches them
        bridge.wallet_says(whatsapp, ALICE, "still here on whatsapp")
        bridge.wallet_says(sms, ALICE, "not by sms")
        [received] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert (received.channel, received.body) == ("whatsapp", "alice: still here on whatsapp")
        await eventually(lambda: [t for t in bridge.sent_to(sms) if "STOP" in t])
        await asyncio.sleep(0.3)
        assert len(bridge.sim.inbox(PHONE)) == 1


class TestWebhookSecurity:
    async def test_unsigned_webhook_is_refused_and_nothing_recorded(
            self, bridge: Bridge) -> None:
        result = await bridge.text(PHONE, SUPPORT, "sneaky", signed=False)
        assert result.status == 403
        async with bridge.store.transaction() as tx:
            assert await tx.find_phone_participant(PHONE, SUPPORT) is None

    async def test_tampered_body_is_refused(self, bridge: Bridge) -> None:
        url = bridge.url + "twilio/messages"
        form = bridge.sim.build_inbound(PHONE, SUPPORT, "pay 10")
        signature = bridge.sim.signature_for(url, form)
        form["Body"] = "pay 1000"
        status, _ = await post_form(url, form, {"X-Twilio-Signature": signature})
        assert status == 403

    async def test_signature_for_another_url_is_refused(self, bridge: Bridge) -> None:
        url = bridge.url + "twilio/messages"
        form = bridge.sim.build_inbound(PHONE, SUPPORT, "hi")
        signature = bridge.sim.signature_for("https://elsewhere.example/twilio/messages", form)
        status, _ = await post_form(url, form, {"X-Twilio-Signature": signature})
        assert status == 403

    async def test_another_account_is_refused(self, bridge: Bridge) -> None:
        url = bridge.url + "twilio/messages"
        form = bridge.sim.build_inbound(PHONE, SUPPORT, "hi")
        form["AccountSid"] = "AC" + "f" * 32
        status, _ = await post_form(url, form, {
            "X-Twilio-Signature": bridge.sim.signature_for(url, form)})
        assert status == 403

    async def test_invalid_number_is_a_400_with_a_reason(self, bridge: Bridge) -> None:
        url = bridge.url + "twilio/messages"
        form = bridge.sim.build_inbound(PHONE, SUPPORT, "hi")
        form["From"] = "not-a-number"
        status, body = await post_form(url, form, {
            "X-Twilio-Signature": bridge.sim.signature_for(url, form)})
        assert status == 400
        assert "From" in body

    async def test_body_above_the_limit_is_413(self, bridge: Bridge) -> None:
        url = bridge.url + "twilio/messages"
        form = bridge.sim.build_inbound(PHONE, SUPPORT, "x" * 20000)
        status, _ = await post_form(url, form, {
            "X-Twilio-Signature": bridge.sim.signature_for(url, form)})
        assert status == 413

    async def test_without_an_auth_token_every_webhook_is_refused(
            self, tmp_path: Path) -> None:
        async with running_bridge(tmp_path, twilio={
                "account_sid": "AC" + "0123456789abcdef" * 2}) as bridge:
            result = await bridge.text(PHONE, SUPPORT, "hi")
            assert result.status == 403


def _rejected(bridge: Bridge, endpoint: str, reason: str) -> float:
    value = bridge.server.app[METRICS].registry.get_sample_value(
        "gateway_webhook_rejected_total", {"endpoint": endpoint, "reason": reason})
    return value or 0.0


async def _post_raw(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": content_type}) as response:
        return response.status, await response.text()


class TestWebhookBodiesThatCannotBeParsed:
    @pytest.mark.parametrize(("path", "endpoint"), [
        ("twilio/messages", "messages"), ("twilio/status", "status")])
    @pytest.mark.parametrize(("body", "content_type", "reason", "says"), [
        (b"\xff\xfe%%", "application/x-www-form-urlencoded", "encoding",
         "body is not valid utf-8 (byte 0xff at offset 0)"),
        (b"From=%2B15551230001", "application/x-www-form-urlencoded; charset=nope",
         "encoding", "unknown encoding: nope"),
        (b"From=%2B15551230001", "multipart/form-data", "form", "malformed form body"),
    ], ids=["not-utf8", "unknown-charset", "multipart-without-boundary"])
    async def test_is_a_counted_400_logged_in_one_line_and_nothing_is_recorded(
            self, bridge: Bridge, caplog: pytest.LogCaptureFixture, path: str, endpoint: str,
            body: bytes, content_type: str, reason: str, says: str) -> None:
        status, text = await _post_raw(bridge.url + path, body, content_type)
        assert (status, says in text) == (400, True), text
        assert _rejected(bridge, endpoint, reason) == 1
        refusals = [r for r in caplog.records if "webhook refused" in r.getMessage()]
        assert [(r.levelno, r.exc_info) for r in refusals] == [(logging.WARNING, None)]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        async with bridge.store.transaction() as tx:
            assert await tx.find_phone_participant(PHONE, SUPPORT) is None
        engine = bridge.store.engine  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            counts = (await conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM events)"))).one()
        assert tuple(counts) == (0, 0)

    async def test_a_body_above_the_limit_is_counted_as_too_large(self, bridge: Bridge) -> None:
        url = bridge.url + "twilio/messages"
        form = bridge.sim.build_inbound(PHONE, SUPPORT, "x" * 20000)
        status, _ = await post_form(url, form, {
            "X-Twilio-Signature": bridge.sim.signature_for(url, form)})
        assert (status, _rejected(bridge, "messages", "too_large")) == (413, 1)


class TestReplies:
    async def test_wallet_reply_reaches_the_phone_from_the_same_number_with_a_label(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        bridge.wallet_says(group, ALICE, "hello from support")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert [(r.from_, r.body) for r in received] == [
            (SUPPORT, "alice: hello from support")]

    async def test_status_callbacks_move_the_delivery_to_delivered(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        message = bridge.wallet_says(group, ALICE, "tracked")

        async def state() -> DeliveryState | None:
            async with bridge.store.transaction() as tx:
                recorded = await tx.find_message(MessageSource.XMTP, message.message_id)
                if recorded is None:
                    return None
                deliveries = await tx.list_deliveries(recorded.id)
                return deliveries[0].state if deliveries else None

        for _ in range(250):  # 5 s at most
            if await state() is DeliveryState.DELIVERED:
                break
            await asyncio.sleep(0.02)
        assert await state() is DeliveryState.DELIVERED

    async def test_callbacks_that_beat_the_send_response_still_write_their_event(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        engine = bridge.store.engine  # type: ignore[attr-defined]

        async def states_since(last: int) -> list[str]:
            async with engine.connect() as conn:
                found = (await conn.execute(sa.text(
                    "SELECT data FROM events WHERE type = 'delivery.updated' AND id > :n"
                    " ORDER BY id"), {"n": last})).scalars()
                return [(json.loads(d) if isinstance(d, str) else d)["state"] for d in found]

        async with engine.connect() as conn:
            last = (await conn.execute(sa.text("SELECT max(id) FROM events"))).scalar_one()
        bridge.sim.inject(Fault.early_callbacks(to=PHONE))
        bridge.wallet_says(group, ALICE, "quick")
        await eventually(lambda: bridge.sim.inbox(PHONE))
        for _ in range(250):  # 5 s at most
            if await states_since(last):
                break
            await asyncio.sleep(0.02)
        assert await states_since(last) == ["delivered"]

    async def test_a_team_rule_sends_every_wallet_reply_with_its_label(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, TEAM, "who is on call?")
        group = await eventually(lambda: bridge.chat.groups and next(iter(bridge.chat.groups)))
        assert bridge.chat.groups[group].members == {ALICE, BOB, CAROL}
        bridge.wallet_says(group, BOB, "me")
        bridge.wallet_says(group, CAROL, "me too")
        received = await bridge.sim.wait_for_inbox(PHONE, 2, within=5)
        assert sorted(r.body for r in received) == ["bob: me", "carol: me too"]

    async def test_a_team_wallet_not_on_xmtp_is_left_out_and_the_others_still_get_texts(
            self, bridge: Bridge) -> None:
        bridge.chat.reachable.discard(CAROL)
        sid = "SM" + "7" * 32
        await bridge.text(PHONE, TEAM, "anyone there?", sid=sid)
        group = await eventually(lambda: bridge.chat.groups and next(iter(bridge.chat.groups)))
        assert bridge.chat.groups[group].members == {ALICE, BOB}
        await eventually(lambda: "anyone there?" in bridge.sent_to(group))
        notice = await eventually(lambda: [t for t in bridge.sent_to(group) if "left out" in t])
        assert notice == [f"{short_address(CAROL)} is not on XMTP and was left out of this "
                          "conversation."]
        [told] = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert "not on XMTP" in told.body and short_address(CAROL) in told.body
        await bridge.text(PHONE, TEAM, "second text")
        await eventually(lambda: "second text" in bridge.sent_to(group))
        bridge.wallet_says(group, BOB, "on it")
        await bridge.sim.wait_for_inbox(PHONE, 2, within=5)
        async with bridge.store.transaction() as tx:
            phone = await tx.find_phone_participant(PHONE, TEAM)
            assert phone is not None
            wallets = {p.identity: p for p in await tx.list_participants(
                phone.conversation_id, include_left=True) if p.identity}
            first = await tx.find_message(MessageSource.SMS, sid)
            assert first is not None
            states = {d.participant_id: d.state for d in await tx.list_deliveries(first.id)}
        assert not wallets[CAROL].active and wallets[ALICE].active and wallets[BOB].active
        assert states == {wallets[ALICE].id: DeliveryState.SENT,
                          wallets[BOB].id: DeliveryState.SENT,
                          wallets[CAROL].id: DeliveryState.FAILED}

    async def test_a_wallet_message_the_phone_cannot_read_gets_a_notice_back(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        bridge.wallet_says(group, ALICE, None, content_type="transactionReference")
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if "transactionReference" in t])
        assert "not delivered" in notice[0]
        assert bridge.sim.inbox(PHONE) == []

    async def test_a_permanent_failure_is_reported_into_the_group(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        bridge.sim.inject(Fault.reject(21211, to=PHONE))
        bridge.wallet_says(group, ALICE, "will fail")
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Not delivered")])
        assert "21211" in notice[0]

    async def test_an_undelivered_status_is_reported_into_the_group(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        bridge.sim.inject(Fault.undelivered(30003, to=PHONE))
        bridge.wallet_says(group, ALICE, "lost in the network")
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Not delivered")])
        assert "30003" in notice[0]

    async def test_a_failure_callback_that_beats_the_send_response_is_reported(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        bridge.sim.inject(Fault.undelivered(30005, to=PHONE, early=True))
        bridge.wallet_says(group, ALICE, "number gone")
        notice = await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Not delivered")])
        assert "30005" in notice[0]
        await asyncio.sleep(0.3)  # told once: by the send's result, not again later
        assert len([t for t in bridge.sent_to(group) if t.startswith("Not delivered")]) == 1

    async def test_a_repeated_failure_callback_tells_the_wallets_once(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        bridge.sim.inject(Fault.undelivered(30003, to=PHONE))
        bridge.wallet_says(group, ALICE, "lost in the network")
        await eventually(
            lambda: [t for t in bridge.sent_to(group) if t.startswith("Not delivered")])
        [failure] = [c for c in bridge.sim.callbacks if c.form["MessageStatus"] == "undelivered"]
        notices = await _count_messages(bridge, "system")
        events = await _count_events(bridge, "delivery.updated")
        for _ in range(2):  # Twilio retries a callback it thinks was not received
            status, _body = await post_form(failure.url, dict(failure.form), {
                "X-Twilio-Signature": bridge.sim.signature_for(failure.url, failure.form)})
            assert status < 300
        assert await _count_messages(bridge, "system") == notices  # recorded in the handler
        assert await _count_events(bridge, "delivery.updated") == events, "nothing new"
        await asyncio.sleep(0.3)  # and none went out meanwhile
        assert len([t for t in bridge.sent_to(group) if t.startswith("Not delivered")]) == 1


class TestCompliance:
    async def test_stop_denies_and_tells_the_wallet_and_start_allows_again(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(ALICE))
        await bridge.text(PHONE, SUPPORT, "STOP")
        await eventually(lambda: [t for t in bridge.sent_to(group) if "replied STOP" in t])
        bridge.wallet_says(group, ALICE, "are you there?")
        await eventually(lambda: [t for t in bridge.sent_to(group)
                                  if t.startswith("Not delivered") and "STOP" in t])
        assert bridge.sim.inbox(PHONE) == []

        await bridge.text(PHONE, SUPPORT, "start")
        await eventually(lambda: [t for t in bridge.sent_to(group) if "replied START" in t])
        bridge.wallet_says(group, ALICE, "welcome back")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert [r.body for r in received] == ["alice: welcome back"]

    async def test_stop_is_honoured_on_a_number_no_rule_claims(self, bridge: Bridge) -> None:
        unclaimed = "+15550109999"
        result = await bridge.text(PHONE, unclaimed, "STOP")
        assert result.status == 200
        async with bridge.store.transaction() as tx:
            contact = await tx.get_contact(PHONE, unclaimed)  # type: ignore[arg-type]
        assert contact is not None and contact.consent is Consent.DENIED

    async def test_a_retried_help_webhook_answers_once(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "HELP", sid="SM" + "2" * 32)
        await bridge.text(PHONE, SUPPORT, "HELP", sid="SM" + "2" * 32)
        await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        await asyncio.sleep(0.3)  # a second answer would have been sent by now
        assert len(bridge.sim.inbox(PHONE)) == 1

    async def test_help_answers_with_the_rules_help_text(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "HELP")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert [r.body for r in received] == ["Support line. Reply STOP to opt out."]
        assert bridge.chat.sent == []


class TestDialMode:
    async def test_the_first_text_names_the_wallet_and_later_texts_stay(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, DIAL, f"{BOB} hi there")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(BOB))
        await bridge.text(PHONE, DIAL, "still me")
        await eventually(lambda: bridge.sent_to(group) == ["hi there", "still me"])
        assert bridge.chat.groups[group].members == {BOB}

    async def test_naming_another_wallet_switches(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, DIAL, "bob: hi bob")
        bob_group = await eventually(lambda: bridge.chat.groups and bridge.group_of(BOB))
        await bridge.text(PHONE, DIAL, "carol, hi carol")
        carol_group = await eventually(lambda: bridge.group_of(CAROL)
                                       if len(bridge.chat.groups) == 2 else None)
        await eventually(lambda: bridge.sent_to(carol_group) == ["hi carol"])
        assert bridge.sent_to(bob_group) == ["hi bob"]
        bridge.wallet_says(bob_group, BOB, "late reply")
        notice = await eventually(lambda: [t for t in bridge.sent_to(bob_group)
                                           if "closed" in t])
        assert notice

    async def test_without_a_wallet_named_the_phone_is_asked_for_one(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, DIAL, "hello?")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert [r.body for r in received] == [
            "Which wallet? Start with its 0x address or a name."]  # the rule's greeting
        assert bridge.chat.groups == {}

    async def test_a_text_that_names_a_wallet_is_not_asked_which_one(
            self, bridge: Bridge) -> None:
        await bridge.text(PHONE, DIAL, "bob: hi bob")
        group = await eventually(lambda: bridge.chat.groups and bridge.group_of(BOB))
        await eventually(lambda: bridge.sent_to(group) == ["hi bob"])
        bridge.wallet_says(group, BOB, "hello from bob")
        await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        await asyncio.sleep(0.3)  # a greeting would have arrived by now
        assert [r.body for r in bridge.sim.inbox(PHONE)] == ["bob: hello from bob"]

    async def test_a_wallet_not_on_xmtp_is_refused_and_the_phone_told(
            self, bridge: Bridge) -> None:
        stranger = "0x" + "12" * 20
        await bridge.text(PHONE, DIAL, f"{stranger} hello")
        received = await bridge.sim.wait_for_inbox(PHONE, 1, within=5)
        assert "not on XMTP" in received[0].body


class TestOperations:
    async def test_health_readiness_and_metrics(self, bridge: Bridge) -> None:
        await bridge.text(PHONE, SUPPORT, "hi")
        async with aiohttp.ClientSession() as session:
            async with session.get(bridge.url + "healthz") as response:
                assert response.status == 200
            async with session.get(bridge.url + "readyz") as response:
                assert response.status == 200, await response.text()
            async with session.get(bridge.url + "metrics") as response:
                text = await response.text()
        assert 'gateway_inbound_messages_total{channel="sms",outcome="recorded"} 1.0' in text
        assert PHONE not in text
