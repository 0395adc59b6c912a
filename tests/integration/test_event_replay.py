"""The event log is complete: replaying ``/v1/events`` from 0 gives back exactly what the
API's list endpoints show — every conversation, participant, message and delivery
receipt — after a random sequence of operations through real HTTP (signed Twilio
webhooks, the chat stream, the Conversations API, Twilio faults, deletes)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.domain.models import DeliveryState
from gateway.domain.relay import LEAVE_REQUEST
from gateway.store.queries import queries_for
from gateway.testing.twilio_sim import Fault
from tests.delivery.world import fresh_postgres, until
from tests.fixtures.api_app import BACKENDS
from tests.integration.bridge_harness import (
    ALICE,
    BOB,
    CAROL,
    SUPPORT,
    TEAM,
    Bridge,
    running_bridge,
)

TOKEN = "replay-token-aaaaaaaaaaaa"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHONES = ["+15551230001", "+15551230002", "+15551230003"]
OPEN = {DeliveryState.PENDING.value, DeliveryState.SENDING.value, DeliveryState.UNKNOWN.value}


class Operations:
    """Random operations against a running bridge, each as a user or a network would."""

    def __init__(self, bridge: Bridge, http: aiohttp.ClientSession, rng: random.Random) -> None:
        self.bridge = bridge
        self.http = http
        self.rng = rng
        self.api_conversations: list[str] = []

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.bridge.url + path.lstrip("/"),
                                     json=body, headers=AUTH) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    async def run(self, count: int) -> None:
        steps = [self.phone_texts, self.phone_keyword, self.wallet_replies,
                 self.wallet_sends_a_reaction, self.wallet_leaves, self.api_conversation,
                 self.api_adds_a_phone, self.api_adds_a_wallet, self.api_sends,
                 self.api_renames, self.api_deletes, self.api_removes_a_participant,
                 self.twilio_refuses_the_next, self.twilio_reports_undelivered]
        weights = [6, 2, 5, 1, 1, 2, 2, 1, 4, 1, 1, 1, 1, 1]
        for _ in range(count):
            step = self.rng.choices(steps, weights)[0]
            await step()

    async def phone_texts(self) -> None:
        await self.bridge.text(self.rng.choice(PHONES), self.rng.choice([SUPPORT, TEAM]),
                               f"text {self.rng.randrange(10**6)}")

    async def phone_keyword(self) -> None:
        await self.bridge.text(self.rng.choice(PHONES), SUPPORT,
                               self.rng.choice(["STOP", "START", "HELP"]))

    def _groups(self) -> list[tuple[str, list[str]]]:
        return [(g.id, sorted(g.members)) for g in self.bridge.chat.groups.values()
                if g.members]

    async def wallet_replies(self) -> None:
        groups = self._groups()
        if groups:
            group, members = self.rng.choice(groups)
            self.bridge.wallet_says(group, self.rng.choice(members),  # type: ignore[arg-type]
                                    f"reply {self.rng.randrange(10**6)}")

    async def wallet_sends_a_reaction(self) -> None:
        groups = self._groups()
        if groups:
            group, members = self.rng.choice(groups)
            self.bridge.wallet_says(group, self.rng.choice(members),  # type: ignore[arg-type]
                                    None, content_type="reaction")

    async def wallet_leaves(self) -> None:
        groups = self._groups()
        if groups:
            group, members = self.rng.choice(groups)
            self.bridge.wallet_says(group, self.rng.choice(members),  # type: ignore[arg-type]
                                    None, content_type=LEAVE_REQUEST)

    async def api_conversation(self) -> None:
        status, body = await self.api("POST", "/v1/conversations",
                                      {"friendly_name": f"api {self.rng.randrange(100)}"})
        if status == 201:
            self.api_conversations.append(body["id"])

    async def api_adds_a_phone(self) -> None:
        if self.api_conversations:
            await self.api("POST", f"/v1/conversations/{self._api_one()}/participants", {
                "address": self.rng.choice(PHONES), "proxy_address": SUPPORT})

    async def api_adds_a_wallet(self) -> None:
        if self.api_conversations:
            await self.api("POST", f"/v1/conversations/{self._api_one()}/participants", {
                "identity": self.rng.choice([ALICE, BOB, CAROL])})

    async def api_sends(self) -> None:
        if self.api_conversations:
            await self.api("POST", f"/v1/conversations/{self._api_one()}/messages", {
                "body": f"api says {self.rng.randrange(10**6)}"})

    async def api_renames(self) -> None:
        if self.api_conversations:
            await self.api("PATCH", f"/v1/conversations/{self._api_one()}", {
                "friendly_name": f"renamed {self.rng.randrange(100)}"})

    async def api_deletes(self) -> None:
        if self.api_conversations:
            ref = self._api_one()
            self.api_conversations.remove(ref)
            await self.api("DELETE", f"/v1/conversations/{ref}")

    async def api_removes_a_participant(self) -> None:
        if self.api_conversations:
            ref = self._api_one()
            status, body = await self.api("GET", f"/v1/conversations/{ref}/participants")
            if status == 200 and body["data"]:
                participant = self.rng.choice(body["data"])
                await self.api("DELETE",
                               f"/v1/conversations/{ref}/participants/{participant['id']}")

    async def twilio_refuses_the_next(self) -> None:
        self.bridge.sim.inject(Fault.reject(21610, times=1))

    async def twilio_reports_undelivered(self) -> None:
        self.bridge.sim.inject(Fault.undelivered(30003, early=self.rng.random() < 0.5))

    def _api_one(self) -> str:
        return self.rng.choice(self.api_conversations)


async def read_events(bridge: Bridge, http: aiohttp.ClientSession, last: int) -> list[Any]:
    """The log from 0 to ``last``, as the SSE stream serves it."""
    events: list[Any] = []
    async with http.get(bridge.url + "v1/events?after=0", headers=AUTH) as response:
        assert response.status == 200
        frame: dict[str, str] = {}
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in frame:
                    events.append(json.loads(frame["data"]))
                    if events[-1]["id"] >= last:
                        return events
                frame = {}
                continue
            name, _, value = line.partition(":")
            frame[name] = value.lstrip()
    raise AssertionError("the stream ended before the last event")


def replay(events: list[Any]) -> dict[str, Any]:
    """What the log says the API should show."""
    conversations: dict[str, Any] = {}
    participants: dict[str, dict[str, Any]] = {}
    messages: dict[str, dict[str, Any]] = {}
    receipts: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (conversation, receipt)
    for event in events:
        kind, data, cid = event["type"], event["data"], event["conversation_id"]
        if kind in ("conversation.added", "conversation.updated"):
            conversations[cid] = data["conversation"]
            participants.setdefault(cid, {})
            messages.setdefault(cid, {})
        elif kind == "conversation.removed":
            conversations.pop(cid, None)
            participants.pop(cid, None)
            messages.pop(cid, None)
            receipts = {k: v for k, v in receipts.items() if v[0] != cid}
        elif kind in ("participant.added", "participant.updated", "participant.removed"):
            p = data["participant"]
            participants[cid][p["id"]] = p
        elif kind == "message.added":
            if cid in messages:
                # without its body when it is gone (its conversation deleted since)
                messages[cid][data["message_id"]] = data.get("message")
                for receipt in data["receipts"]:
                    receipts[receipt["id"]] = (cid, receipt)
        elif kind == "delivery.updated":
            receipts[data["delivery"]["id"]] = (cid, data["delivery"])
    for cid, conversation in conversations.items():
        times = [m["created_at"] for m in messages[cid].values()]
        if times:
            conversation["last_message_at"] = max(times)
    return {"conversations": conversations, "participants": participants,
            "messages": messages,
            "receipts": {k: receipt for k, (_, receipt) in receipts.items()}}


async def listed(ops: Operations) -> dict[str, Any]:
    """What the API's list endpoints show."""
    async def pages(path: str) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            query = f"&page_token={token}" if token else ""
            status, body = await ops.api("GET", f"{path}?page_size=100{query}")
            assert status == 200, body
            found += body["data"]
            token = body["next_page_token"]
            if not token:
                return found

    conversations = {c["id"]: c for c in await pages("/v1/conversations")}
    participants, messages, receipts = {}, {}, {}
    for cid in conversations:
        _, body = await ops.api("GET", f"/v1/conversations/{cid}/participants?include_left=true")
        participants[cid] = {p["id"]: p for p in body["data"]}
        messages[cid] = {}
        for message in await pages(f"/v1/conversations/{cid}/messages"):
            _status, full = await ops.api("GET",
                                         f"/v1/conversations/{cid}/messages/{message['id']}")
            for receipt in full.pop("receipts"):
                receipts[receipt["id"]] = receipt
            messages[cid][message["id"]] = full
    return {"conversations": conversations, "participants": participants,
            "messages": messages, "receipts": receipts}


def differences(log: dict[str, Any], api: dict[str, Any]) -> str:
    """Which entries differ, field by field (the log's value, the API's)."""
    found = []
    for key in sorted(set(log) | set(api)):
        a, b = log.get(key), api.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                found.append(f"{key}: " + ", ".join(
                    f"{k}: {a.get(k)!r} | {b.get(k)!r}" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)))
            else:
                found.append(f"{key}: {a!r} | {b!r}")
    return "; ".join(found)


async def last_event_id(bridge: Bridge) -> int:
    queries = queries_for(bridge.store)  # type: ignore[arg-type]
    try:
        return await queries.last_event_id()
    finally:
        await queries.close()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_replaying_the_event_log_gives_back_what_the_api_lists(
        tmp_path: Path, seed: int, backend: str) -> None:
    database = ({"url": await fresh_postgres("replay"), "active_key": "k1",
                 "encryption_keys": {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}
                if backend == "postgres" else None)
    async with running_bridge(tmp_path, api={"tokens": [TOKEN]},
                              **({"database": database} if database else {})) as bridge, \
            aiohttp.ClientSession() as http:
        ops = Operations(bridge, http, random.Random(seed))
        await ops.run(50)

        async def quiet() -> bool | None:
            _status, body = await ops.api("GET", "/v1/messages?page_size=100")
            now_open = False
            for message in body["data"]:
                _, full = await ops.api(
                    "GET", f"/v1/conversations/{message['conversation_id']}/messages/"
                           f"{message['id']}")
                if full and any(r["state"] in OPEN for r in full.get("receipts", [])):
                    now_open = True
            return True if not now_open and bridge.chat.inbox.empty() else None
        await until(quiet, within=20.0)
        await bridge.sim.settle()

        # a status callback may still be on its way: read until nothing moved meanwhile
        for _ in range(20):
            last = await last_event_id(bridge)
            from_the_log = replay(await read_events(bridge, http, last))
            from_the_api = await listed(ops)
            if await last_event_id(bridge) == last:
                break
        else:
            raise AssertionError("the log never stood still")
        for part in ("conversations", "participants", "messages", "receipts"):
            assert from_the_log[part] == from_the_api[part], differences(
                from_the_log[part], from_the_api[part])
