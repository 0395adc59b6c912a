"""``gateway xmtp status`` and ``gateway xmtp revoke``: the gateway's XMTP installations.

Both talk to the configured network with libxmtp's API client alone and never open or
create the gateway's libxmtp database, so they never register an installation, work
beside a running gateway, and work when no client of the inbox can be built (at its
installation cap, or with its database lost). An embedded devnode is started on its
database for the command (it is not reachable otherwise: stop the gateway first).
Revocations are signed with ``xmtp.wallet_key``, the inbox's recovery wallet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from gateway.config import GatewayConfig
from gateway.config.report import load_for_command
from gateway.errors import GatewayError
from gateway.xmtp.api import connect_api, inbox_id_for, revoke_installations
from gateway.xmtp.client import XmtpClient
from gateway.xmtp.inbox_state import MAX_INBOX_UPDATES, MAX_INSTALLATIONS, InboxState
from gateway.xmtp.installations import InstallationRecord, RecordedInstallation
from gateway.xmtp.network import gateway_access, node_url_for


class AdminError(GatewayError):
    """A request the command cannot carry out as asked (an unknown id, say)."""

    code = "xmtp_admin"


@dataclass(frozen=True, slots=True)
class Status:
    network: str
    wallet: str
    state: InboxState | None  # None: the wallet has no inbox yet
    recorded: RecordedInstallation | None  # this data_dir's installation
    db_present: bool

    @property
    def recorded_here(self) -> str | None:
        """The installation this data_dir registered, if it is of this inbox."""
        if self.recorded is None or self.state is None:
            return None
        if self.recorded.inbox_id != self.state.inbox_id:
            return None
        return self.recorded.installation_id

    @property
    def this_installation(self) -> str | None:
        """The installation the gateway runs as: recorded here, its database present."""
        return self.recorded_here if self.db_present else None


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config)
    if config is None:
        return 1
    os.environ.setdefault("RUST_LOG", "off")  # libxmtp's own log lines are not for here
    try:
        if args.action == "status":
            return asyncio.run(show_status(config, sys.stdout))
        return asyncio.run(revoke(config, sys.stdout, ids=args.ids,
                                   all_others=args.all_others, confirmed=args.yes))
    except GatewayError as exc:
        print(f"gateway xmtp {args.action}: {exc}", file=sys.stderr)
        return 1


@contextlib.asynccontextmanager
async def connected(config: GatewayConfig) -> AsyncIterator[tuple[Any, str]]:
    """libxmtp's API client for the configured network, and words for that network."""
    xmtp = config.xmtp
    async with contextlib.AsyncExitStack() as stack:
        node_url = node_url_for(xmtp)
        gateway = gateway_access(xmtp)
        if gateway is not None:
            described = f"XMTP's decentralised network, through {gateway.host}"
        elif xmtp.devnode.embedded:
            from gateway.xmtp.devnode import DevNode
            from gateway.xmtp.devnode.identity_service import InboxLimits

            node = await stack.enter_async_context(DevNode.start(
                db=str(xmtp.devnode.db), limits=InboxLimits(
                    xmtp.devnode.max_installations, xmtp.devnode.max_inbox_updates)))
            node_url = node.url
            described = f"the embedded devnode ({xmtp.devnode.db})"
        else:
            described = f"XMTP {xmtp.env}, v3 node {node_url}"
        assert node_url is not None  # config validation
        api = await connect_api(node_url, is_secure=node_url.startswith("https:"),
                                gateway=gateway)
        yield api, described


async def read_status(config: GatewayConfig, api: Any, network: str) -> Status:
    wallet = config.xmtp.wallet_address
    record = InstallationRecord.in_data_dir(config.data_dir)
    inbox_id = await inbox_id_for(api, wallet)
    state = None
    if inbox_id is not None:
        observer = await XmtpClient.observer(api)
        state = await observer.inbox_state(inbox_id)
    return Status(network=network, wallet=wallet, state=state, recorded=record.read(),
                  db_present=config.xmtp.db_path.exists())


def render(status: Status, config: GatewayConfig, out: TextIO) -> None:
    out.write(f"network:           {status.network}\n")
    out.write(f"wallet:            {status.wallet}\n")
    state = status.state
    if state is None:
        out.write("inbox:             none yet (gateway serve registers it on first start)\n")
        return
    out.write(f"inbox:             {state.inbox_id}\n")
    out.write(f"installations:     {state.in_use} of {MAX_INSTALLATIONS} in use, "
              f"{max(MAX_INSTALLATIONS - state.in_use, 0)} free\n")
    if state.updates_used is not None:
        out.write(f"identity updates:  {state.updates_used} of {MAX_INBOX_UPDATES} used, "
                  f"{state.updates_left} left (each installation added or revoked uses one)\n")
    out.write(f"this installation: {_this(status, config)}\n")
    if not state.installations:
        return
    out.write("\n  INSTALLATION" + " " * 54 + "CREATED\n")
    for installation in state.installations:
        mark = ""
        if installation.id == status.this_installation:
            mark = "  (this gateway)"
        elif installation.id == status.recorded_here:
            mark = "  (this data_dir's, its database missing)"
        out.write(f"  {installation.id}  {installation.created}{mark}\n")


def _this(status: Status, config: GatewayConfig) -> str:
    db = config.xmtp.db_path
    recorded = status.recorded
    assert status.state is not None
    if recorded is None:
        if status.db_present:
            return f"not recorded yet (libxmtp database {db}; serve records it on start)"
        return "none: this data_dir has not registered one"
    if recorded.inbox_id != status.state.inbox_id:
        return f"none of this inbox (this data_dir's is of inbox {recorded.inbox_id})"
    active = "active" if status.state.has(recorded.installation_id) else "REVOKED"
    present = "present" if status.db_present else "MISSING"
    return f"{recorded.installation_id} ({active}; libxmtp database {db}: {present})"


async def show_status(config: GatewayConfig, out: TextIO) -> int:
    async with connected(config) as (api, network):
        render(await read_status(config, api, network), config, out)
    return 0


def choose(status: Status, ids: Sequence[str], *, all_others: bool) -> list[str]:
    """The installation ids to revoke: every active one but this gateway's, or those
    named (full ids or unambiguous prefixes)."""
    state = status.state
    if state is None:
        raise AdminError(f"wallet {status.wallet} has no XMTP inbox: nothing to revoke")
    active = [i.id for i in state.installations]
    own = status.this_installation
    if all_others:
        return [i for i in active if i != own]
    chosen: list[str] = []
    for given in ids:
        prefix = given.lower().removeprefix("0x")
        matches = [i for i in active if i.startswith(prefix)] if prefix else []
        if len(matches) != 1:
            found = "no" if not matches else f"{len(matches)}"
            raise AdminError(f"{found} active installation(s) of inbox {state.inbox_id} "
                             f"start with {given!r} (see gateway xmtp status)")
        if matches[0] == own:
            raise AdminError(f"{matches[0]} is this gateway's own installation; revoking it "
                             "would stop this gateway from using XMTP")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


async def revoke(config: GatewayConfig, out: TextIO, *, ids: Sequence[str],
                  all_others: bool, confirmed: bool) -> int:
    if all_others == bool(ids):
        raise AdminError("name the installations to revoke, or give --all-others")
    async with connected(config) as (api, network):
        status = await read_status(config, api, network)
        chosen = choose(status, ids, all_others=all_others)
        assert status.state is not None
        if not chosen:
            out.write("nothing to revoke: no other installation is active\n")
            return 0
        recovery = status.state.recovery_address
        if recovery is not None and recovery != status.wallet.lower():
            raise AdminError(f"only the inbox's recovery wallet {recovery} may revoke its "
                             f"installations; xmtp.wallet_key is {status.wallet}")
        out.write(f"{'revoking' if confirmed else 'would revoke'} {len(chosen)} "
                  f"installation(s) of inbox {status.state.inbox_id}:\n")
        for installation_id in chosen:
            out.write(f"  {installation_id}\n")
        if not confirmed:
            out.write("nothing revoked: add --yes to revoke them (they stop receiving "
                      "messages at once; this cannot be undone)\n")
            return 1
        await revoke_installations(api, config.xmtp.wallet_key.get_secret_value(),
                                   status.state.inbox_id, chosen)
        out.write("revoked.\n\n")
        render(await read_status(config, api, network), config, out)
    return 0
