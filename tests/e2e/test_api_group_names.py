"""The Conversations API over real libxmtp: a conversation's XMTP group is named after its
friendly_name, and renaming the conversation renames the group its wallets see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store import open_store
from gateway.xmtp.client import XmtpClient
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.network import XmtpChatNetwork
from tests.e2e.conftest import MakeClient
from tests.fixtures.api_app import AUTH, KEYS, ApiParts, TickingClock, build_app

pytestmark = pytest.mark.e2e


@pytest.fixture
async def network(devnode: DevNode, tmp_path: Path) -> AsyncIterator[XmtpChatNetwork]:
    network = await XmtpChatNetwork.open(
        node_url=devnode.url, private_key="0x" + "42" * 32, db_path=tmp_path / "gw.db3",
        encryption_key=bytes(range(32)))
    yield network
    await network.close()


async def group_name_seen_by(wallet: XmtpClient, group_id: str) -> str:
    await wallet.sync_all()
    return wallet.conversation(group_id).name


async def call(client: Any, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.request(method, path, json=body, headers=AUTH)
    data: dict[str, Any] = await resp.json()
    assert resp.status in (200, 201), data
    return data


class TestRenamingThroughTheApi:
    async def test_a_wallet_sees_its_group_take_the_new_friendly_name(
            self, aiohttp_client: Any, tmp_path: Path, network: XmtpChatNetwork,
            make_client: MakeClient) -> None:
        store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", keys=KEYS,
                                 active_key="k1")
        parts = ApiParts(store, network, TickingClock(), "")  # type: ignore[arg-type]
        client = await aiohttp_client(build_app(parts, close_store=True))
        wallet = await make_client()

        created = await call(client, "POST", "/v1/conversations",
                             {"friendly_name": "Support", "unique_name": "s1"})
        await call(client, "POST", "/v1/conversations/s1/participants",
                   {"identity": wallet.address})
        group_id = created["xmtp_group_id"]
        assert await group_name_seen_by(wallet, group_id) == "Support"

        renamed = await call(client, "PATCH", "/v1/conversations/s1",
                             {"friendly_name": "Support One"})
        assert renamed["friendly_name"] == "Support One"
        assert await group_name_seen_by(wallet, group_id) == "Support One"
