"""The OpenAPI document stays true: every route of the app is in it and nothing else,
real responses match its schemas, and schemathesis finds no 5xx or mismatch."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from aiohttp import web

from gateway.api.hub import EVENT_TYPES
from gateway.api.openapi import DOCUMENT
from gateway.api.schema import ref
from gateway.domain.ids import ConversationId, MessageId, ParticipantId
from gateway.domain.models import Consent
from gateway.domain.writer import AfterCommit, Writer
from tests.fixtures.api_app import AUTH, PHONE, PROXY, TOKEN, WALLET, api_client

_METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method in _METHODS and path and path.startswith("/v1"):
            found.add((route.method, path))
    return found


def documented_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in DOCUMENT["paths"].items()
            for method in item if method.upper() in _METHODS}


def response_validator(method: str, path: str, status: int) -> Any:
    response = DOCUMENT["paths"][path][method.lower()]["responses"][str(status)]
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return None
    return jsonschema_rs.validator_for({**schema, "components": DOCUMENT["components"]})


@pytest.fixture
async def api(aiohttp_client, tmp_path):  # type: ignore[no-untyped-def]
    return await api_client(aiohttp_client, tmp_path)


class TestTheDocumentCoversTheApp:
    async def test_every_route_is_documented_and_every_documented_route_exists(self, api):
        client, _ = api
        assert app_routes(client.app) == documented_routes()

    async def test_it_is_served_as_json(self, api):
        client, _ = api
        resp = await client.get("/v1/openapi.json")
        assert await resp.json() == DOCUMENT

    def test_every_schema_reference_resolves(self):
        text = repr(DOCUMENT)
        for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
            assert name in DOCUMENT["components"]["schemas"], name


class TestResponsesMatchTheirSchemas:
    async def test_a_walk_through_every_operation(self, api):
        client, _ = api
        checked: set[tuple[str, str]] = set()

        async def call(method: str, template: str, expect: int, *, json: Any = None,
                       params: dict[str, str] | None = None, **path: str) -> Any:
            url = template.format(**path)
            resp = await client.request(method, url, json=json, params=params, headers=AUTH)
            assert resp.status == expect, await resp.text()
            documented = DOCUMENT["paths"][template][method.lower()]["responses"]
            assert str(resp.status) in documented, (method, template, resp.status)
            validator = response_validator(method, template, resp.status)
            body = await resp.json() if resp.content_type == "application/json" else None
            if validator is not None:
                errors = [e.message for e in validator.iter_errors(body)]
                assert not errors, (method, template, errors)
            checked.add((method, template))
            return body

        conv = await call("POST", "/v1/conversations", 201,
                          json={"friendly_name": "f", "attributes": {"a": [1]}})
        ref = conv["id"]
        await call("GET", "/v1/conversations", 200, params={"page_size": "1"})
        await call("GET", "/v1/conversations/{ref}", 200, ref=ref)
        await call("GET", "/v1/conversations/{ref}", 404, ref="missing")
        await call("PATCH", "/v1/conversations/{ref}", 200, json={"unique_name": "u"}, ref=ref)
        wallet = await call("POST", "/v1/conversations/{ref}/participants", 201,
                            json={"identity": WALLET}, ref=ref)
        await call("POST", "/v1/conversations/{ref}/participants", 201,
                   json={"address": PHONE, "proxy_address": PROXY}, ref=ref)
        await call("POST", "/v1/conversations/{ref}/participants", 422,
                   json={"address": PROXY, "proxy_address": PROXY}, ref=ref)
        await call("GET", "/v1/conversations/{ref}/participants", 200, ref=ref)
        await call("GET", "/v1/conversations/{ref}/participants/{participant_id}", 200,
                   ref=ref, participant_id=wallet["id"])
        message = await call("POST", "/v1/conversations/{ref}/messages", 201,
                             json={"body": "hi", "author": wallet["id"]}, ref=ref)
        await call("GET", "/v1/conversations/{ref}/messages", 200,
                   params={"order": "desc", "page_size": "1"}, ref=ref)
        await call("GET", "/v1/conversations/{ref}/messages/{message_id}", 200,
                   ref=ref, message_id=message["id"])
        await call("GET", "/v1/messages", 200, params={"limit": "5"})
        await call("DELETE", "/v1/conversations/{ref}/participants/{participant_id}", 204,
                   ref=ref, participant_id=wallet["id"])
        await call("PATCH", "/v1/conversations/{ref}", 200, json={"state": "closed"}, ref=ref)
        await call("PATCH", "/v1/conversations/{ref}", 409, json={"state": "active"}, ref=ref)
        await call("DELETE", "/v1/conversations/{ref}", 204, ref=ref)
        resp = await client.get("/v1/events", params={"after": "0"}, headers=AUTH)
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        resp.close()
        checked.add(("GET", "/v1/events"))
        await call("GET", "/v1/openapi.json", 200)
        assert checked == documented_routes()


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is pinned in the test extra"
    return found


class TestSchemathesis:
    async def test_no_server_errors_and_responses_conform(self, api, tmp_path):
        """Bounded: 15 examples per operation with a fixed seed, about ten seconds. The
        event stream never ends, so it is tested on its own (test_api_events)."""
        client, _ = api
        process = await asyncio.create_subprocess_exec(
            _schemathesis(), "run", str(client.make_url("/v1/openapi.json")),
            "-H", f"Authorization: Bearer {TOKEN}",
            "--exclude-path", "/v1/events",
            "--checks", "not_a_server_error,status_code_conformance,"
                        "content_type_conformance,response_schema_conformance",
            "--max-examples", "15", "--seed", "7", "--generation-database", "none",
            "--workers", "1", "--no-color", "--request-timeout", "10",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 150)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-4000:]
        assert re.search(r"\d+ generated, \d+ passed", text), text[-2000:]


async def read_frames(resp, count: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The next ``count`` frames carrying data, as {id, event, data: parsed JSON}."""
    frames: list[dict[str, Any]] = []
    fields: dict[str, str] = {}

    async def _read() -> None:
        while len(frames) < count:
            line = (await resp.content.readline()).decode()
            assert line, "stream ended"
            line = line.rstrip("\n")
            if not line:
                if "data" in fields:
                    frames.append({"id": fields["id"], "event": fields["event"],
                                   "data": json.loads(fields["data"])})
                fields.clear()
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value

    await asyncio.wait_for(_read(), 10)
    return frames


def schema_validator(name: str) -> Any:
    return jsonschema_rs.validator_for({**ref(name), "components": DOCUMENT["components"]})


class TestTheEventStreamMatchesItsSchema:
    async def test_a_frame_of_every_type_validates_against_its_event_s_schema(self, api):
        client, parts = api
        post = functools.partial(client.post, headers=AUTH)
        conv = await (await post("/v1/conversations", json={"unique_name": "c"})).json()
        cid = ConversationId(conv["id"])
        wallet = await (await post("/v1/conversations/c/participants",
                                   json={"identity": WALLET})).json()
        await post("/v1/conversations/c/participants",
                   json={"address": PHONE, "proxy_address": PROXY})
        message = await (await post("/v1/conversations/c/messages", json={"body": "hi"})).json()
        await client.patch("/v1/conversations/c", json={"friendly_name": "F"}, headers=AUTH)
        now = datetime.now(UTC)
        writer, after = Writer(takers=lambda _channel: None), AfterCommit()
        async with parts.store.transaction() as tx:  # as the relay writes them
            delivery = (await tx.list_deliveries(MessageId(message["id"])))[0]
            await writer.moved(tx, after, cid, [delivery], now)
            joined = await tx.get_participant(ParticipantId(wallet["id"]))
            assert joined is not None
            await writer.set_consent(tx, after, joined, Consent.DENIED, now=now)
            await after.write_events(tx)
        resp = await client.get("/v1/events", params={"after": "0"}, headers=AUTH)
        frames = await read_frames(resp, 7)
        await client.delete(f"/v1/conversations/c/participants/{wallet['id']}", headers=AUTH)
        await client.delete("/v1/conversations/c", headers=AUTH)
        frames += await read_frames(resp, 2)
        resp.close()
        assert {f["event"] for f in frames} == set(EVENT_TYPES)
        frame_schema, event_schema = schema_validator("EventFrame"), schema_validator("Event")
        for frame in frames:
            errors = [e.message for e in frame_schema.iter_errors(frame)]
            assert not errors, (frame["event"], errors)
            assert event_schema.is_valid(frame["data"])
        by_type = {f["event"]: f["data"] for f in frames}
        assert by_type["delivery.updated"]["data"]["delivery"]["id"] == delivery.id
        assert by_type["message.added"]["data"]["message"]["body"] == "hi"

    async def test_the_schemas_refuse_what_the_stream_never_sends(self):
        frame_schema = schema_validator("EventFrame")
        event = {"id": 3, "type": "message.added", "conversation_id": "CH1",
                 "created_at": "2026-01-01T00:00:00+00:00",
                 "data": {"message_id": "IM1", "index": 0}}
        assert frame_schema.is_valid({"id": "3", "event": "message.added", "data": event})
        # a frame whose event is not its data's type, an id that is no number
        assert not frame_schema.is_valid({"id": "3", "event": "delivery.updated",
                                          "data": event})
        assert not frame_schema.is_valid({"id": "x", "event": "message.added", "data": event})
        # the data of another type, a malformed resource
        assert not frame_schema.is_valid({"id": "3", "event": "message.added", "data": {
            **event, "data": {"message_id": "IM1"}}})
        assert not frame_schema.is_valid({"id": "3", "event": "message.added", "data": {
            **event, "data": {**event["data"], "receipts": [{"id": "DL1"}]}}})

    def test_delivery_and_receipts_are_described_as_optional(self):
        data = DOCUMENT["components"]["schemas"]
        assert "receipts" in data["MessageAddedData"]["properties"]
        assert "receipts" not in data["MessageAddedData"]["required"]
        assert "delivery" in data["DeliveryUpdatedData"]["properties"]
        assert "delivery" not in data["DeliveryUpdatedData"]["required"]
        content = DOCUMENT["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
        assert content == {"text/event-stream": {"schema": ref("EventFrame")}}
