"""``xmtp.gateway_host`` reaches libxmtp: against the devnode (which serves the v3 API
only) the gateway's client makes its first call to XMTP's decentralised API, and the
gateway stops with an error naming gateway_host."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.errors import XmtpGatewayUnavailable
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.network import open_chat_network
from tests.unit.config_fixtures import minimal

pytestmark = pytest.mark.e2e


class TestAGatewayHostThatIsNoGateway:
    async def test_the_first_call_is_to_the_decentralised_api_and_the_error_names_it(
            self, tmp_path: Path) -> None:
        async with DevNode.start() as node:
            raw = minimal()
            raw["xmtp"].update(node_url=node.url, gateway_host=node.url,
                               gateway_auth={"token": "Bearer for-the-gateway"})
            raw["data_dir"] = str(tmp_path / "data")
            config = parse_config(raw, base_dir=tmp_path, env={})
            with pytest.raises(XmtpGatewayUnavailable) as refused:
                async with open_chat_network(config):
                    pass
            calls = node.unserved_calls
        message = str(refused.value)
        assert message.startswith(f"xmtp.gateway_host {node.url}: it does not serve XMTP's "
                                  "decentralised API")
        assert "\n" not in message
        assert calls and calls[0].method == "/xmtp.xmtpv4.payer_api.PayerApi/GetNodes"
        # nothing was registered on the v3 API the devnode does serve
        assert {call.method for call in calls} == {
            "/xmtp.xmtpv4.payer_api.PayerApi/GetNodes"}
        assert not (tmp_path / "data" / "xmtp" / "gateway.db3").exists()
