"""``gateway wallet``: a wallet on the local XMTP node to try wallet participants with,
without writing libxmtp code.

It makes a throwaway wallet (or uses ``--key``'s), registers it on the node — the
embedded devnode of the gateway running on ``--config``'s data directory, or the node
``--node`` names — and prints its address. Then it chats as it: every line read from
stdin is sent to the current conversation (the one a message last came from, or the
wallet last joined), and what arrives in any of its conversations is printed. ``/list``
shows its conversations, ``/to N`` picks one, ``/quit`` (or the end of input) stops.
``--print-address`` only registers the wallet and prints its address, for scripts:
``WALLET=$(gateway wallet --print-address)``.

A development tool: it refuses the production network, and keeps its libxmtp database
in memory unless ``--db`` names a file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import secrets
import sys
from dataclasses import dataclass, field

from eth_account import Account
from eth_utils.address import to_checksum_address

from gateway.config.report import load_for_command
from gateway.errors import GatewayError
from gateway.terminal import stdin_lines
from gateway.xmtp.client import Conversation, XmtpClient, XmtpMessage

POLL_SECONDS = 0.5  # how often new conversations and messages are looked for


class WalletUnusable(GatewayError):
    code = "wallet_unusable"


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RUST_LOG", "off")  # libxmtp would log every step to stdout
    try:
        node_url = args.node or _gateway_node(args.config)
        key = _key(args.key)
        return asyncio.run(_main(node_url, key, throwaway=args.key is None, db=args.db,
                                 print_address=args.print_address))
    except GatewayError as exc:
        print(f"gateway wallet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _gateway_node(config_path: str) -> str:
    """The node of the gateway configured at ``config_path``: its embedded devnode (while
    it runs), or the node it is configured with."""
    from gateway.xmtp.network import node_url_for, running_devnode_url

    config = load_for_command(config_path)
    if config is None:
        raise WalletUnusable(f"no node to use: {config_path} did not load (above); give "
                             "--node URL instead")
    if config.xmtp.env == "production":
        raise WalletUnusable("the config is on XMTP's production network; this is a "
                             "development tool (give --node URL to insist)")
    if config.xmtp.devnode.embedded:
        url = running_devnode_url(config.data_dir)
        if url is None:
            raise WalletUnusable(
                f"no gateway is running on {config.data_dir}: wallets live on its embedded "
                f"devnode, so start 'gateway serve --config {config_path}' first (or give "
                "--node URL)")
        return url
    url = node_url_for(config.xmtp)
    assert url is not None  # not embedded: the config names a node or a network
    return url


def _key(raw: str | None) -> str:
    if raw is None:
        return "0x" + secrets.token_hex(32)
    try:
        Account.from_key(raw)
    except (ValueError, TypeError):
        raise WalletUnusable("--key must be a secp256k1 private key: 0x and 64 hex "
                             "digits") from None
    return raw


async def _main(node_url: str, key: str, *, throwaway: bool, db: str | None,
                print_address: bool) -> int:
    # a file database is encrypted with a key derived from the wallet's: nothing to keep
    db_key = (hashlib.sha256(b"gateway wallet db|" + key.encode()).digest()
              if db is not None else None)
    wallet = await XmtpClient.create(node_url=node_url, private_key=key, db_path=db,
                                     encryption_key=db_key,
                                     is_secure=node_url.startswith("https:"))
    try:
        if print_address:
            print(wallet.address, flush=True)
            return 0
        print(f"wallet {wallet.address} on {node_url}", flush=True)
        if throwaway:
            print(f"a throwaway key; to be this wallet again: gateway wallet --key {key}",
                  flush=True)
        return await Chat(wallet).run()
    finally:
        wallet.close()


@dataclass
class Chat:
    """Lines from stdin into the current conversation; arrivals printed."""

    wallet: XmtpClient
    groups: dict[str, Conversation] = field(default_factory=dict)  # by id, in join order
    seen: set[str] = field(default_factory=set)  # message ids already shown
    senders: dict[str, str] = field(default_factory=dict)  # inbox id -> an address
    current: Conversation | None = None

    HELP = ("type a line to send it to the current conversation; /list shows them, "
            "/to N picks one, /quit (or Ctrl-D) stops")

    async def run(self) -> int:
        await self._catch_up(quiet=True)  # history from earlier runs (--key, --db)
        print(self.HELP, flush=True)
        lines = stdin_lines("wallet-stdin")
        watcher = asyncio.create_task(self._watch())
        try:
            while True:
                line = await lines.get()
                if line is None or line.strip() == "/quit":
                    return 0
                await self._handle(line.rstrip("\n"))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _handle(self, line: str) -> None:
        command, _, rest = line.strip().partition(" ")
        if not line.strip():
            return
        if command == "/list":
            self._list()
        elif command == "/to":
            self._pick(rest.strip())
        elif command.startswith("/"):
            print(self.HELP, flush=True)
        elif self.current is None:
            print("no conversation yet: add this wallet to one, e.g. POST "
                  f'/v1/conversations/{{ref}}/participants {{"identity": '
                  f'"{self.wallet.address}"}}', flush=True)
        else:
            try:
                await self.current.send_text(line)
            except GatewayError as exc:
                print(f"not sent: {exc}", file=sys.stderr, flush=True)

    def _list(self) -> None:
        if not self.groups:
            print("no conversations yet", flush=True)
        for number, group in enumerate(self.groups.values(), 1):
            mark = "*" if group is self.current else " "
            print(f"{mark} {number}. {_label(group)}", flush=True)

    def _pick(self, choice: str) -> None:
        groups = list(self.groups.values())
        if not (choice.isdigit() and 1 <= int(choice) <= len(groups)):
            print(f"/to takes a number from /list (1 to {len(groups)})", flush=True)
            return
        self.current = groups[int(choice) - 1]
        print(f"now in {_label(self.current)}", flush=True)

    async def _watch(self) -> None:
        while True:
            try:
                await self._catch_up(quiet=False)
            except GatewayError as exc:
                print(f"(could not sync: {exc})", file=sys.stderr, flush=True)
            await asyncio.sleep(POLL_SECONDS)

    async def _catch_up(self, *, quiet: bool) -> None:
        """New conversations and their new messages (shown unless ``quiet``)."""
        await self.wallet.sync_all()
        for group in self.wallet.conversations():
            if group.id not in self.groups:
                self.groups[group.id] = group
                self.current = group
                if not quiet:
                    print(f"joined {_label(group)}", flush=True)
            for message in await group.messages():
                if message.id in self.seen:
                    continue
                self.seen.add(message.id)
                if quiet or not self._from_others(message):
                    continue
                self.current = group
                text = message.text if message.text is not None else f"({message.content_type})"
                print(f"[{group.name or group.id[:8]}] {await self._sender(message)}: {text}",
                      flush=True)

    def _from_others(self, message: XmtpMessage) -> bool:
        return (message.sender_inbox_id != self.wallet.inbox_id
                and not message.is_membership_change)

    async def _sender(self, message: XmtpMessage) -> str:
        inbox = message.sender_inbox_id
        if inbox not in self.senders:
            found = (await self.wallet.addresses_of([inbox])).get(inbox)
            self.senders[inbox] = to_checksum_address(found[0]) if found else inbox[:12]
        return self.senders[inbox]


def _label(group: Conversation) -> str:
    return f"{group.name or '(unnamed)'} ({'DM' if group.is_dm else 'group'} {group.id})"
