"""Two gateway apps on one PostgreSQL database, as two processes: one does the XMTP work
(``xmtp.worker: true``, a recording chat network standing in for XMTP), the other none.
The second's API makes its group changes through the first; texts it takes are posted
by the first at once (a notification, not its poll); a second XMTP process waits for the
first to stop; a gateway started again ends the session its previous life left holding
the XMTP lock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import Parts, create_app
from gateway.store.engine import advisory_key, create_engine
from gateway.store.leader import ProcessLock, lock_is_held
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.testing.twilio_sim import TwilioSimulator
from tests.integration.bridge_harness import (
    ACCOUNT_SID,
    ALICE,
    AUTH_TOKEN,
    BOB,
    PHONE,
    SUPPORT,
    bridge_config,
    eventually,
    free_port,
)

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not POSTGRES_URL, reason="GATEWAY_TEST_POSTGRES_URL is not set")]
TOKEN = "processes-token-aaaaaaaaaaaa"
WALLET_KEY = "0x" + "11" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def fresh_database() -> str:
    from tests.delivery.world import fresh_postgres

    return await fresh_postgres("processes")


@contextlib.asynccontextmanager
async def gateway(tmp: Path, database: str, sim: TwilioSimulator, *, worker: bool,
                  chat: RecordingChatNetwork | None = None, port: int | None = None,
                  answer_within: float = 5.0) -> AsyncIterator[TestServer]:
    port = port or free_port()
    xmtp = {"env": "local", "node_url": "http://127.0.0.1:5556", "wallet_key": WALLET_KEY,
            "db_encryption_key": "22" * 32, "worker": worker, "send_timeout_seconds": answer_within}
    config = bridge_config(
        tmp, port=port, sim_url=sim.url, xmtp=xmtp, api={"tokens": [TOKEN]},
        database={"url": database, "encryption_keys": {
            "k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}, "active_key": "k1"})
    server = TestServer(create_app(config, Parts(chat=chat)), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def two_processes(tmp_path: Path) -> AsyncIterator[tuple[TestServer, TestServer,
                                                                RecordingChatNetwork,
                                                                TwilioSimulator]]:
    database = await fresh_database()
    web_port = free_port()
    sim = TwilioSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                          webhook_url=f"http://127.0.0.1:{web_port}/twilio/messages")
    chat = RecordingChatNetwork(reachable=[ALICE, BOB])
    async with (sim.running(),
                gateway(tmp_path / "xmtp", database, sim, worker=True, chat=chat) as xmtp,
                gateway(tmp_path / "web", database, sim, worker=False, port=web_port) as web):
        yield xmtp, web, chat, sim


async def call(server: TestServer, method: str, path: str,
               body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, str(server.make_url(path)), json=body, headers=AUTH) as response:
        return response.status, await response.json() if response.status != 204 else None


class TestAProcessWithoutXmtp:
    async def test_makes_the_apis_group_changes_through_the_xmtp_process(
            self, tmp_path: Path) -> None:
        async with two_processes(tmp_path) as (_xmtp, web, chat, _sim):
            status, conversation = await call(web, "POST", "/v1/conversations",
                                              {"friendly_name": "Support"})
            assert status == 201, conversation
            group = chat.groups[conversation["xmtp_group_id"]]
            assert group.name == "Support" and group.members == set()

            status, wallet = await call(web, "POST",
                                        f"/v1/conversations/{conversation['id']}/participants",
                                        {"identity": ALICE})
            assert status == 201, wallet
            assert group.members == {ALICE}
            status, body = await call(web, "POST",
                                      f"/v1/conversations/{conversation['id']}/participants",
                                      {"identity": "0x" + "12" * 20})
            assert (status, body["code"]) == (422, "wallet_not_on_xmtp")

            status, _ = await call(web, "PATCH", f"/v1/conversations/{conversation['id']}",
                                   {"friendly_name": "Support (EU)"})
            assert status == 200 and group.name == "Support (EU)"
            status, _ = await call(web, "DELETE", f"/v1/conversations/{conversation['id']}"
                                   f"/participants/{wallet['id']}")
            assert status == 204 and group.members == set()

    async def test_answers_502_when_no_process_does_the_xmtp_work(
            self, tmp_path: Path) -> None:
        database = await fresh_database()
        sim = TwilioSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                              webhook_url="http://127.0.0.1:9/twilio/messages")
        async with sim.running(), gateway(tmp_path, database, sim, worker=False) as web:
            started = time.monotonic()
            status, body = await call(web, "POST", "/v1/conversations",
                                      {"friendly_name": "Support"})
            assert (status, body["code"]) == (502, "chat_network_error")
            assert "no gateway process does the XMTP work" in body["error"]
            assert time.monotonic() - started < 2.0  # told at once, not after a timeout
            status, listed = await call(web, "GET", "/v1/conversations")
            assert listed["data"] == [], "nothing was recorded"


    async def test_answers_502_when_the_xmtp_process_does_not_answer_and_forgets_it(
            self, tmp_path: Path) -> None:
        from pydantic import SecretStr

        from gateway.config.types import address_of

        database = await fresh_database()
        engine = create_engine(database)
        sim = TwilioSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                              webhook_url="http://127.0.0.1:9/twilio/messages")
        # an XMTP process that holds its lock but answers nothing (hung, say)
        hung = ProcessLock(engine, f"gateway.xmtp:{address_of(SecretStr(WALLET_KEY))}",
                           holder_id="HOhung")
        await hung.acquire()
        try:
            async with sim.running(), gateway(tmp_path, database, sim, worker=False,
                                              answer_within=1.0) as web:
                status, body = await call(web, "POST", "/v1/conversations",
                                          {"friendly_name": "Support"})
                assert (status, body["code"]) == (502, "chat_network_error")
                assert "did not answer within 1s" in body["error"]
            async with engine.connect() as connection:
                left = await connection.exec_driver_sql("SELECT count(*) FROM chat_requests")
                assert left.scalar_one() == 0, "the request is not left for later"
        finally:
            await hung.release()
            await engine.dispose()


class TestWakingTheXmtpProcess:
    async def test_texts_the_other_process_took_are_posted_at_once(
            self, tmp_path: Path) -> None:
        async with two_processes(tmp_path) as (_xmtp, _web, chat, sim):
            latencies = []
            for i in range(5):
                started = time.monotonic()
                await sim.text_from_phone(PHONE, SUPPORT, f"text {i}")  # to the web process
                await eventually(lambda i=i: len(chat.sent) > i, within=5)
                latencies.append(time.monotonic() - started)
            assert [s.text for s in chat.sent] == [f"text {i}" for i in range(5)]
            # the chat engine polls every second: a notification wakes it in milliseconds
            assert max(latencies) < 0.5, latencies


class TestTheXmtpLock:
    async def test_a_second_xmtp_process_waits_until_the_first_stops(
            self, tmp_path: Path) -> None:
        database = await fresh_database()
        sim = TwilioSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                              webhook_url="http://127.0.0.1:9/twilio/messages")
        first_chat, second_chat = RecordingChatNetwork(), RecordingChatNetwork()
        async with sim.running():
            first = gateway(tmp_path / "a", database, sim, worker=True, chat=first_chat)
            await first.__aenter__()
            second_up = asyncio.Event()

            async def second() -> None:
                async with gateway(tmp_path / "b", database, sim, worker=True,
                                   chat=second_chat):
                    second_up.set()
                    await asyncio.Event().wait()

            task = asyncio.create_task(second())
            try:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await second_up.wait()
                await first.__aexit__(None, None, None)
                async with asyncio.timeout(10):
                    await second_up.wait()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def test_a_new_life_ends_the_session_its_previous_life_left_holding_it(
            self) -> None:
        database = await fresh_database()
        engine = create_engine(database)
        dsn = database.replace("postgresql+asyncpg", "postgresql")
        name = "gateway.xmtp:test"
        left = await asyncpg.connect(dsn, server_settings={"application_name": "gateway HOme"})
        try:
            assert await left.fetchval("SELECT pg_try_advisory_lock($1)", advisory_key(name))
            other = ProcessLock(engine, name, holder_id="HOsomeone-else", poll_seconds=0.05)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await other.acquire()
            await other.release()

            again = ProcessLock(engine, name, holder_id="HOme", poll_seconds=0.05)
            async with asyncio.timeout(5):
                await again.acquire()
            assert left.is_closed() or not await _alive(left)
            assert await lock_is_held(engine, name)
            await again.release()
            assert not await lock_is_held(engine, name)
        finally:
            with contextlib.suppress(Exception):
                await left.close()
            await engine.dispose()


async def _alive(connection: Any) -> bool:
    try:
        await connection.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True
