"""A group another installation of the gateway's inbox made (a data directory restored
from an older backup, a process of the previous release) is found by fetching welcomes
once, not refused with "group … not found"."""

from __future__ import annotations

import secrets

import pytest

from gateway.domain.ids import WalletAddress
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.network import XmtpChatNetwork
from tests.e2e.conftest import MakeClient

pytestmark = pytest.mark.e2e


class TestAGroupMadeByAnotherInstallation:
    async def test_is_posted_into_and_changed_after_fetching_its_welcome(
            self, devnode: DevNode, make_client: MakeClient) -> None:
        wallet = await make_client()
        key = secrets.token_bytes(32)
        first = await XmtpChatNetwork.open(node_url=devnode.url, private_key=key,
                                           db_path=None, encryption_key=None)
        second = await XmtpChatNetwork.open(node_url=devnode.url, private_key=key,
                                            db_path=None, encryption_key=None)
        try:
            group_id = await first.create_group(name="made elsewhere",
                                                members=[WalletAddress(wallet.address)])
            await second.send(group_id, "from the other installation", key="m1")
            await second.rename_group(group_id, "renamed elsewhere")
        finally:
            await first.close()
            await second.close()
        await wallet.sync_all()
        group = next(c for c in wallet.conversations() if c.id == group_id)
        assert [m.text for m in await group.messages() if m.text] == [
            "from the other installation"]
        assert group.name == "renamed elsewhere"
