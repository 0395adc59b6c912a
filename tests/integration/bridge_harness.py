"""The gateway app on real HTTP with a real SQLite store, the Twilio simulator reached by
the real twilio library, and a recording chat network standing in for XMTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.app import Parts, create_app
from gateway.appkeys import STORE
from gateway.config import GatewayConfig, parse_config
from gateway.domain.ids import WalletAddress
from gateway.domain.ports import ChatMessage, Store
from gateway.testing.chat_fake import RecordingChatNetwork
from gateway.testing.twilio_sim import TwilioSimulator
from tests.ports import free_port

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f3b1a2c4d5e6f708192a3b4c5d6e7f80"
ALICE = WalletAddress("0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B")
BOB = WalletAddress("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
CAROL = WalletAddress("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359")
SUPPORT = "+15550100001"
DIAL = "+15550100002"
TEAM = "+15550100003"
PHONE = "+15551230001"
PHONE_2 = "+15551230002"


def bridge_config(tmp: Path, *, port: int, sim_url: str, **overrides: Any) -> GatewayConfig:
    raw: dict[str, Any] = {
        "data_dir": str(tmp),
        "server": {"host": "127.0.0.1", "port": port,
                   "public_url": f"http://127.0.0.1:{port}", "max_body_bytes": 16384},
        "database": {"url": "sqlite+aiosqlite:///gateway.db",
                     "encryption_keys": {"k1": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
                     "active_key": "k1"},
        "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                   "api_base_url": sim_url,
                   "rate_limits": {"default_per_second": 50},
                   "retry": {"max_attempts": 3, "base_delay_seconds": 0.05,
                             "max_delay_seconds": 0.2}},
        "xmtp": {"env": "local", "node_url": "http://127.0.0.1:5556",
                 "wallet_key": "0x" + "11" * 32, "db_encryption_key": "22" * 32},
        # the simulator's media and the tests' own file servers are on 127.0.0.1
        "media": {"allow_insecure_urls": True},
        "directory": {"alice": ALICE, "bob": BOB, "carol": CAROL},
        "rules": [
            {"name": "support", "proxy": SUPPORT, "channels": ["sms", "whatsapp"],
             "wallets": ["alice"], "help": "Support line. Reply STOP to opt out."},
            {"name": "dial", "proxy": DIAL, "mode": "dial",
             "greeting": "Which wallet? Start with its 0x address or a name."},
            {"name": "team", "proxy": TEAM, "wallets": ["alice", "bob", "carol"]},
        ],
    }
    for key, value in overrides.items():
        raw[key] = value
    return parse_config(raw, base_dir=tmp)


@dataclass
class Bridge:
    config: GatewayConfig
    sim: TwilioSimulator
    chat: RecordingChatNetwork
    server: TestServer
    _ids: itertools.count[int]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))

    @property
    def store(self) -> Store:
        return self.server.app[STORE]

    async def text(self, from_: str, to: str, body: str = "", **kwargs: Any) -> Any:
        return await self.sim.text_from_phone(from_, to, body, **kwargs)

    def wallet_says(self, group_id: str, sender: WalletAddress, text: str | None,
                    content_type: str = "text", **more: Any) -> ChatMessage:
        """``more``: the rest of ``ChatMessage`` (``encoded``, ``reference``, …)."""
        message = ChatMessage(group_id=group_id, message_id=f"xmtp-{next(self._ids)}",
                              sender=sender, sent_at_ns=next(self._ids) * 1_000_000,
                              text=text, content_type=content_type, **more)
        self.chat.inbox.put_nowait(message)
        return message

    def group_of(self, member: WalletAddress) -> str:
        groups = [g.id for g in self.chat.groups.values() if member in g.members]
        assert len(groups) == 1, groups
        return groups[0]

    def sent_to(self, group_id: str) -> list[str]:
        return [s.text for s in self.chat.sent if s.group_id == group_id]


async def eventually(check: Callable[[], Any], *, within: float = 5.0) -> Any:
    """Polls ``check`` until it returns something truthy; fails after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_bridge(tmp: Path, **overrides: Any) -> AsyncIterator[Bridge]:
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/twilio/messages"
    sim = TwilioSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, webhook_url=webhook)
    async with sim.running():
        config = bridge_config(tmp, port=port, sim_url=sim.url, **overrides)
        chat = RecordingChatNetwork(reachable=[ALICE, BOB, CAROL])
        app = create_app(config, Parts(chat=chat))
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        try:
            yield Bridge(config, sim, chat, server, itertools.count(1))
        finally:
            await server.close()


async def post_form(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.post(url, data=form, headers=headers) as response:
        return response.status, await response.text()
