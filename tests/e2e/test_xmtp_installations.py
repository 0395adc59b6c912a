"""The gateway's XMTP installations with real libxmtp on a devnode that enforces XMTP's
caps: the gateway never registers one by accident nor an 11th, warns from 8, and
``gateway xmtp status`` / ``revoke`` manage them with the API client alone."""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.errors import InboxLogFull, InstallationLimitReached, InstallationLost
from gateway.xmtp import admin
from gateway.xmtp.client import PendingInstallation, XmtpClient
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.devnode.identity_service import InboxLimits
from gateway.xmtp.installations import InstallationRecord
from gateway.xmtp.network import open_chat_network
from tests.unit.config_fixtures import minimal

pytestmark = pytest.mark.e2e


@pytest.fixture
async def node() -> AsyncIterator[DevNode]:
    async with DevNode.start(limits=InboxLimits.xmtp()) as running:
        yield running


def gateway_config(node: DevNode, data_dir: Path) -> GatewayConfig:
    raw = minimal()
    raw["xmtp"]["node_url"] = node.url
    raw["xmtp"]["wallet_key"] = "0x" + secrets.token_hex(32)
    raw["data_dir"] = str(data_dir)
    return parse_config(raw, base_dir=data_dir, env={})


@pytest.fixture
def config(node: DevNode, tmp_path: Path) -> GatewayConfig:
    return gateway_config(node, tmp_path / "data")


async def start_once(config: GatewayConfig, *, allow_new: bool = False) -> str:
    """Opens the gateway's chat network as ``serve`` does; its installation id."""
    async with open_chat_network(config, allow_new_installation=allow_new) as network:
        return network.installation_id


async def other_installations(config: GatewayConfig, node: DevNode, count: int) -> list[str]:
    """``count`` more installations of the gateway's wallet (apps elsewhere, say)."""
    key = config.xmtp.wallet_key.get_secret_value()
    made = []
    for _ in range(count):
        client = await XmtpClient.create(node_url=node.url, private_key=key)
        made.append(client.installation_id)
    return made


async def status_text(config: GatewayConfig) -> str:
    out = io.StringIO()
    assert await admin.show_status(config, out) == 0
    return out.getvalue()


def lose_database(config: GatewayConfig) -> None:
    shutil.rmtree(config.xmtp.db_path.parent)


class TestAGatewayStarting:
    async def test_it_records_its_installation_and_reuses_it_across_restarts(
            self, config: GatewayConfig) -> None:
        first = await start_once(config)
        recorded = InstallationRecord.in_data_dir(config.data_dir).read()
        assert recorded is not None and recorded.installation_id == first
        assert await start_once(config) == first
        assert "installations:     1 of 10 in use, 9 free" in await status_text(config)

    async def test_a_lost_database_is_an_error_naming_the_fix_and_makes_nothing(
            self, config: GatewayConfig) -> None:
        first = await start_once(config)
        lose_database(config)
        with pytest.raises(InstallationLost) as refused:
            await start_once(config)
        message = str(refused.value)
        assert first in message and "--new-installation" in message
        assert "\n" not in message
        assert not config.xmtp.db_path.exists()  # refused before libxmtp made a database
        text = await status_text(config)
        assert "1 of 10 in use" in text
        assert f"{first} (active; libxmtp database {config.xmtp.db_path}: MISSING)" in text

    async def test_new_installation_registers_a_second_one_when_asked(
            self, config: GatewayConfig) -> None:
        first = await start_once(config)
        lose_database(config)
        second = await start_once(config, allow_new=True)
        assert second != first
        recorded = InstallationRecord.in_data_dir(config.data_dir).read()
        assert recorded is not None and recorded.installation_id == second
        assert await start_once(config) == second  # and it is kept from then on
        assert "2 of 10 in use" in await status_text(config)

    async def test_an_installation_revoked_elsewhere_may_be_replaced_without_asking(
            self, config: GatewayConfig) -> None:
        first = await start_once(config)
        lose_database(config)
        out = io.StringIO()
        assert await admin.revoke(config, out, ids=[first[:12]], all_others=False,
                                   confirmed=True) == 0
        assert await start_once(config) != first

    async def test_from_the_eighth_installation_it_warns_loudly(
            self, config: GatewayConfig, node: DevNode,
            caplog: pytest.LogCaptureFixture) -> None:
        await other_installations(config, node, 7)
        with caplog.at_level(logging.WARNING, logger="gateway.xmtp"):
            await start_once(config)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("has 8 of its 10 installations in use" in w for w in warnings), warnings

    async def test_an_eleventh_installation_is_refused_in_one_line_naming_the_fix(
            self, config: GatewayConfig, node: DevNode) -> None:
        await other_installations(config, node, 10)
        with pytest.raises(InstallationLimitReached) as refused:
            await start_once(config)
        message = str(refused.value)
        assert "already has 10 of its 10 installations" in message
        assert "gateway xmtp revoke" in message and "\n" not in message
        assert not config.xmtp.db_path.exists()


class TestTheDevnodesCaps:
    async def test_a_registration_racing_past_libxmtps_own_check_is_refused_by_the_node(
            self, config: GatewayConfig, node: DevNode) -> None:
        await other_installations(config, node, 9)
        key = config.xmtp.wallet_key.get_secret_value()
        config.data_dir.mkdir(parents=True)
        both_checked = asyncio.Barrier(2)

        async def after_both_checked(pending: PendingInstallation) -> None:
            await both_checked.wait()

        results = await asyncio.gather(*(
            XmtpClient.create(node_url=node.url, private_key=key,
                              db_path=str(config.data_dir / f"race{n}.db3"),
                              before_registering=after_both_checked)
            for n in range(2)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1, results
        assert isinstance(refused[0], InstallationLimitReached)
        assert (refused[0].count, refused[0].limit) == (10, 10)

    async def test_an_inbox_past_its_lifetime_updates_is_refused_as_log_full(
            self, tmp_path: Path) -> None:
        async with DevNode.start(limits=InboxLimits(max_updates=3)) as small:
            config = gateway_config(small, tmp_path / "data")
            await other_installations(config, small, 3)  # create+add, add, add
            with pytest.raises(InboxLogFull) as refused:
                await start_once(config)
        assert "new xmtp.wallet_key" in str(refused.value)


class TestStatusAndRevoke:
    async def test_status_lists_every_installation_and_what_is_left(
            self, config: GatewayConfig, node: DevNode) -> None:
        others = await other_installations(config, node, 2)
        mine = await start_once(config)
        text = await status_text(config)
        assert "installations:     3 of 10 in use, 7 free" in text
        assert "identity updates:  3 of 256 used, 253 left" in text
        assert f"{mine}  " in text and text.count("(this gateway)") == 1
        for other in others:
            assert other in text

    async def test_a_wallet_without_an_inbox_is_told_serve_makes_one(
            self, config: GatewayConfig) -> None:
        assert "none yet" in await status_text(config)

    async def test_revoke_shows_first_then_revokes_all_others_at_the_cap(
            self, config: GatewayConfig, node: DevNode) -> None:
        mine = await start_once(config)
        others = await other_installations(config, node, 9)

        shown = io.StringIO()
        assert await admin.revoke(config, shown, ids=[], all_others=True,
                                   confirmed=False) == 1
        assert "nothing revoked: add --yes" in shown.getvalue()
        assert "10 of 10 in use" in await status_text(config)

        done = io.StringIO()
        assert await admin.revoke(config, done, ids=[], all_others=True, confirmed=True) == 0
        assert all(other in done.getvalue() for other in others)
        assert "installations:     1 of 10 in use" in done.getvalue()
        # its inbox's creation, 9 adds and one revoke for all 9
        assert "identity updates:  11 of 256 used" in done.getvalue()
        assert await start_once(config) == mine

    async def test_revoke_works_with_no_client_of_the_inbox_possible(
            self, config: GatewayConfig, node: DevNode) -> None:
        first = await start_once(config)
        lose_database(config)
        await other_installations(config, node, 9)  # at the cap, and no database here
        out = io.StringIO()
        assert await admin.revoke(config, out, ids=[first], all_others=False,
                                   confirmed=True) == 0
        assert "9 of 10 in use" in out.getvalue()
        assert await start_once(config) != first

    async def test_revoke_refuses_unknown_ids_and_this_gateways_own(
            self, config: GatewayConfig) -> None:
        mine = await start_once(config)
        with pytest.raises(admin.AdminError, match="no active installation"):
            await admin.revoke(config, io.StringIO(), ids=["ffff0000"], all_others=False,
                                confirmed=True)
        with pytest.raises(admin.AdminError, match="this gateway's own installation"):
            await admin.revoke(config, io.StringIO(), ids=[mine], all_others=False,
                                confirmed=True)
