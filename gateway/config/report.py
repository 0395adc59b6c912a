"""``gateway check-config PATH``: validates a config, prints its rules as a table and
every problem; exit status 1 when there is any.

Nothing is written: ``generate`` secrets are read from secrets.yaml when it exists and
otherwise made up for this check only (they are created for real on first start), so a
demo wallet whose key is not made yet is shown as such, not with a made-up address.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from gateway.config import GatewayConfig, load_config
from gateway.domain.rules import RuleBook, RuleMode, short_address
from gateway.errors import ConfigError

_DEMO_KEY = "demo.wallet_key"
_HEADERS = ("RULE", "PROXY", "CHANNELS", "MODE", "WALLETS", "ALLOW", "DENY", "OUTBOUND")


def run(args: argparse.Namespace) -> int:
    return check(Path(args.path), sys.stdout)


def load_for_command(path: str | os.PathLike[str]) -> GatewayConfig | None:
    """The config a command runs with, or None after printing every problem to stderr."""
    try:
        return load_config(path)
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
        rows = _rows_from_raw(path)
        if rows:
            out.write(_table(rows) + "\n\n")
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
    for note in notes(config):
        out.write(f"note: {note}\n")
    out.write(f"{path}: OK ({len(book.rules)} rule(s))\n")
    return 0


def notes(config: GatewayConfig) -> list[str]:
    """Things that are allowed but worth knowing; they do not fail the check."""
    found = []
    if config.twilio.auth_token is None:
        found.append("twilio.auth_token is empty: every Twilio webhook will be refused")
    if not config.api.tokens:
        found.append("api.tokens is empty: the REST API is disabled")
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


def _rows_from_raw(path: Path) -> list[tuple[str, ...]]:
    """Best-effort rows from the unvalidated YAML, so a broken config still shows what
    it declares."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    rules = raw.get("rules") if isinstance(raw, Mapping) else None
    if not isinstance(rules, list):
        return []
    rows: list[tuple[str, ...]] = []
    for rule in rules:
        if not isinstance(rule, Mapping):
            continue
        allow, deny = rule.get("allow") or {}, rule.get("deny") or {}
        rows.append((
            _text(rule.get("name")), _text(rule.get("proxy")),
            _text(rule.get("channels", ["sms"])), _text(rule.get("mode", "fixed")),
            _text(rule.get("wallets", [])),
            _text(_raw_screen(allow)) or "everyone", _text(_raw_screen(deny)) or "-", "?",
        ))
    return rows


def _raw_screen(screen: Any) -> list[Any]:
    if not isinstance(screen, Mapping):
        return [screen]
    return [*(screen.get("prefixes") or []), *(screen.get("countries") or [])]


def _text(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    if not rows:
        return "(no rules)"
    widths = [max(len(row[i]) for row in (_HEADERS, *rows)) for i in range(len(_HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in (_HEADERS, *rows)]
    return "\n".join(lines)
