"""``gateway check-config PATH``: validates a config and prints its rules as a table, or
every problem in the order of the file; exit status 1 when there is any.

Nothing is written: ``generate`` secrets are read from secrets.yaml when it exists and
otherwise made up for this check only (they are created for real on first start), so a
demo wallet whose key is not made yet is shown as such, not with a made-up address.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from gateway.config import GatewayConfig, load_config
from gateway.domain.rules import RuleBook, RuleMode, short_address
from gateway.errors import ConfigError

_DEMO_KEY = "demo.wallet_key"
_HEADERS = ("RULE", "PROXY", "CHANNELS", "MODE", "WALLETS", "ALLOW", "DENY", "OUTBOUND")


def run(args: argparse.Namespace) -> int:
    return check(Path(args.path), sys.stdout)


def load_for_command(path: str | os.PathLike[str], *,
                     persist_secrets: bool = True) -> GatewayConfig | None:
    """The config a command runs with, or None after printing every problem to stderr.
    ``persist_secrets=False`` writes nothing (see load_config)."""
    try:
        return load_config(path, persist_secrets=persist_secrets)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for key, message in exc.problems:
            print(f"  {key}: {message}" if key else f"  {message}", file=sys.stderr)
        return None


def check(path: Path, out: TextIO) -> int:
    made_up: set[str] = set()
    try:
        config = load_config(path, persist_secrets=False, made_up=made_up)
    except ConfigError as exc:
        # No rules table: read from a config that is not valid, it could show a rule as
        # it will not run (an unquoted +1555… as a number, say).
        out.write(f"{path}: {len(exc.problems)} problem(s)\n")
        for key, message in exc.problems:
            out.write(f"  {key}: {message}\n" if key else f"  {message}\n")
        return 1
    book = config.rulebook()
    out.write(_table(_rows(book)) + "\n\n")
    if book.directory:
        out.write("directory:\n")
        unborn = config.demo.alias if config.demo and _DEMO_KEY in made_up else None
        for alias, wallet in sorted(book.directory.items()):
            shown = "(generated on first start)" if alias == unborn else wallet
            out.write(f"  {alias}: {shown}\n")
        out.write("\n")
    out.write(media_summary(config) + "\n")
    for note in notes(config):
        out.write(f"note: {note}\n")
    out.write(f"{path}: OK ({len(book.rules)} rule(s))\n")
    return 0


def media_summary(config: GatewayConfig) -> str:
    """Where files wait between the networks, and how long their links live."""
    media = config.media
    storage = media.storage
    where = (f"local {storage.local.dir}" if storage.backend == "local" or storage.s3 is None
             else f"s3 {storage.s3.bucket}/{storage.s3.prefix}, encrypted at rest: "
             f"{_s3_encryption(storage.s3.server_side_encryption)}")
    return (f"media: {where}; up to {media.max_items} file(s), {media.max_item_bytes} bytes "
            f"each, {media.max_message_bytes} per message; inline into groups up to "
            f"{media.inline_max_bytes} bytes; MediaUrl links {media.phone_url_ttl_seconds}s, "
            f"other links {storage.url_ttl_seconds}s; kept {media.retention_days:g} days\n")


def _s3_encryption(asked: str) -> str:
    return ("the bucket's own default (nothing asked)" if asked == "bucket"
            else f"{asked}, asked with every upload")


def notes(config: GatewayConfig) -> list[str]:
    """Things that are allowed but worth knowing; they do not fail the check."""
    found = []
    if config.twilio.auth_token is None:
        found.append("twilio.auth_token is empty: every Twilio webhook will be refused")
    if not config.api.tokens:
        found.append("api.tokens is empty: the REST API is disabled")
    found += _xmtp_notes(config)
    if not config.xmtp.worker:
        found.append("xmtp.worker is false: this process does no XMTP work (no installation, "
                     "no stream, no posts); the process with xmtp.worker: true does it, and "
                     "this one's API reaches it through the database")
    if config.media.allow_insecure_urls:
        found.append("media.allow_insecure_urls is on: plain http and loopback media URLs "
                     "are fetched (local development only)")
    for index, rule in enumerate(config.rules):
        if "whatsapp" in rule.channels and rule.outbound.whatsapp_template is None:
            found.append(f"rules[{index}] ({rule.name}): no outbound.whatsapp_template, so "
                         "nothing can reach a WhatsApp user outside the 24-hour window")
        if rule.outbound.allow_unsolicited:
            found.append(f"rules[{index}] ({rule.name}): allow_unsolicited lets wallets "
                         "text phones that never texted in; set daily quotas")
    return found


def _xmtp_notes(config: GatewayConfig) -> list[str]:
    """Which XMTP network the config reaches (always said), and its devnode's caps."""
    xmtp = config.xmtp
    devnode = xmtp.devnode
    if xmtp.gateway_host is not None:
        auth = ("with a credential in its " + xmtp.gateway_auth.header + " header"
                if xmtp.gateway_auth.token is not None else "without a credential")
        return [f"xmtp.gateway_host is set: libxmtp uses XMTP's decentralised network through "
                f"the XMTP Gateway Service at {xmtp.gateway_host} ({auth}), which must be "
                "running with a funded payer key; xmtp.node_url is not used"]
    if xmtp.env != "local":
        return [f"xmtp.gateway_host is empty: libxmtp uses XMTP's v3 nodes ({xmtp.env}); "
                "set it to an XMTP Gateway Service to move to the decentralised network"]
    found = [("xmtp.env is local: the embedded devnode, a node of this machine's own"
              if devnode.embedded else
              f"xmtp.env is local: the node at {xmtp.node_url}, not XMTP's network")
             + "; XMTP apps on dev or production cannot reach the gateway's wallet"]
    if devnode.embedded and (devnode.max_installations or devnode.max_inbox_updates):
        found.append(f"the embedded devnode caps each inbox at "
                     f"{devnode.max_installations or 'any number of'} installations and "
                     f"{devnode.max_inbox_updates or 'any number of'} identity updates "
                     "(XMTP's network: 10 and 256)")
    return found


def _rows(book: RuleBook) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for rule in book.rules:
        if rule.mode is RuleMode.DIAL:
            wallets = "(named by the phone)"
        else:
            wallets = ", ".join(book.alias_of(w) or short_address(w) for w in rule.wallets)
        outbound = []
        if rule.outbound.allow_unsolicited:
            outbound.append("unsolicited")
        if rule.outbound.per_phone_daily is not None:
            outbound.append(f"{rule.outbound.per_phone_daily}/phone/day")
        if rule.outbound.per_rule_daily is not None:
            outbound.append(f"{rule.outbound.per_rule_daily}/day")
        if rule.outbound.whatsapp_template is not None:
            outbound.append("wa-template")
        if rule.outbound.sms_only:
            outbound.append("sms-only")
        rows.append((
            rule.name, rule.proxy, ",".join(sorted(rule.channels)), rule.mode.value, wallets,
            _screen(rule.allow.prefixes, rule.allow.countries, "everyone"),
            _screen(rule.deny.prefixes, rule.deny.countries, "-"),
            " ".join(outbound) or "replies only",
        ))
    return rows


def _screen(prefixes: Sequence[str], countries: Sequence[str] | frozenset[str],
            empty: str) -> str:
    return " ".join([*prefixes, *sorted(countries)]) or empty


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    if not rows:
        return "(no rules)"
    widths = [max(len(row[i]) for row in (_HEADERS, *rows)) for i in range(len(_HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in (_HEADERS, *rows)]
    return "\n".join(lines)
