"""Bridge rules: which conversation an inbound text lands in, and who may text at all.

A rule owns one proxy number on some channels. In *fixed* mode every phone that texts
it talks to the rule's wallets (a support line); in *dial* mode the phone's text names
the wallet ("0xAb…12 hello", or "alice: hello" with an alias from the directory) and
later texts stay in that conversation until the phone names another one.

Pure: the config builds a ``RuleBook`` once; the relay asks it questions.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from eth_utils.address import is_checksum_address, to_checksum_address

from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel
from gateway.domain.phones import country_of
from gateway.domain.policy import OutboundPolicy

# Variables a sender-label template may use (see ``Rule.sender_label``).
LABEL_VARIABLES = frozenset({"label", "alias", "address", "short", "rule"})
DEFAULT_SENDER_LABEL = "{label}: "

ALIAS_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_HEX_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{40}")
# The first token, then ":" or "," (optionally spaced), or whitespace, or the end.
_DIAL = re.compile(r"\s*@?(?P<target>[^\s:,]+)(?:\s*[:,]\s*|\s+|$)(?P<rest>.*)", re.DOTALL)


class RuleMode(enum.StrEnum):
    FIXED = "fixed"  # always the rule's wallets
    DIAL = "dial"  # the phone names the wallet in its text


@dataclass(frozen=True, slots=True)
class Screen:
    """A set of phones given by E.164 prefixes ("+44", "+1555") and ISO countries."""

    prefixes: tuple[str, ...] = ()
    countries: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.prefixes and not self.countries

    def covers(self, phone: str) -> bool:
        if any(phone.startswith(prefix) for prefix in self.prefixes):
            return True
        return bool(self.countries) and country_of(phone) in self.countries


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    proxy: PhoneNumber
    channels: frozenset[Channel]
    mode: RuleMode
    wallets: tuple[WalletAddress, ...]  # fixed: one or more; dial: none
    allow: Screen = field(default_factory=Screen)  # empty: everyone
    deny: Screen = field(default_factory=Screen)
    greeting: str | None = None  # sent to a phone when its conversation starts
    help_text: str | None = None  # the answer to HELP
    # Prefixed to text sent to phones; variables are LABEL_VARIABLES. "" sends bare text.
    sender_label: str = DEFAULT_SENDER_LABEL
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)


@dataclass(frozen=True, slots=True)
class Dial:
    """A phone's text that names a wallet: ``wallet`` to talk to, ``rest`` the message."""

    wallet: WalletAddress
    rest: str
    alias: str | None = None  # the directory name used, when not a raw address


def normalize_address(raw: str) -> WalletAddress | None:
    """EIP-55 form of a 0x address, or None. All-lower or all-upper hex is taken as
    unchecksummed; mixed case must carry a correct checksum (a typo is then caught)."""
    if not _HEX_ADDRESS.fullmatch(raw):
        return None
    address = "0x" + raw[2:]
    digits = address[2:]
    if digits == digits.lower() or digits == digits.upper():
        return WalletAddress(to_checksum_address(address))
    if is_checksum_address(address):
        return WalletAddress(address)
    return None


def short_address(wallet: str) -> str:
    """"0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B" -> "0xAb58…eC9B"."""
    return f"{wallet[:6]}…{wallet[-4:]}"


def parse_dial(text: str, directory: Mapping[str, WalletAddress]) -> Dial | None:
    """The wallet a text names in its first token, or None when it names none.

    The token is a 0x address or a directory alias (case-insensitive), optionally with
    a leading "@" and followed by ":" or ","; ``rest`` is the remaining text, stripped.
    """
    found = _DIAL.match(text)
    if found is None:
        return None
    target, rest = found.group("target"), found.group("rest").strip()
    wallet = normalize_address(target)
    if wallet is not None:
        return Dial(wallet=wallet, rest=rest)
    alias = target.lower()
    if alias in directory:
        return Dial(wallet=directory[alias], rest=rest, alias=alias)
    return None


def label_fields(template: str) -> set[str]:
    """The variable names a template uses. Raises ValueError on a malformed template."""
    names: set[str] = set()
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"'{{{name}}}' is not a variable name")
        if spec or conversion:
            raise ValueError(f"'{{{name}}}' may not carry a format spec or conversion")
        names.add(name)
    return names


def render_label(template: str, **variables: str) -> str:
    """Fills a sender-label template. Raises ValueError on an unknown variable."""
    missing = label_fields(template) - variables.keys()
    if missing:
        raise ValueError(f"unknown label variable(s): {', '.join(sorted(missing))}")
    return template.format_map(variables)


class RuleBook:
    """The configured rules and the directory of wallet aliases, indexed for lookup."""

    def __init__(self, rules: Sequence[Rule], directory: Mapping[str, WalletAddress]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.directory: Mapping[str, WalletAddress] = MappingProxyType(
            {alias.lower(): wallet for alias, wallet in directory.items()})
        self._by_name = {rule.name: rule for rule in self.rules}
        self._by_route: dict[tuple[str, Channel], Rule] = {}
        for rule in self.rules:
            for channel in rule.channels:
                # First claim wins; the config refuses duplicates before we get here.
                self._by_route.setdefault((rule.proxy, channel), rule)
        self._alias_of: dict[str, str] = {}
        for alias, wallet in sorted(self.directory.items()):
            self._alias_of.setdefault(wallet, alias)

    def match(self, proxy: str, channel: Channel) -> Rule | None:
        """The rule owning this proxy number on this channel."""
        return self._by_route.get((proxy, channel))

    def governing(self, proxy: str | None, channel: Channel,
                  conversation_rule: str | None) -> Rule | None:
        """The rule a text to a phone goes out under: the one owning the number and
        channel it leaves from (a conversation the API made is governed by its number's
        rule like any other), else the rule that made the conversation."""
        rule = self.match(proxy, channel) if proxy is not None else None
        if rule is None and conversation_rule is not None:
            rule = self.get(conversation_rule)
        return rule

    def get(self, name: str) -> Rule | None:
        """A rule by name (conversations keep the name of the rule that created them)."""
        return self._by_name.get(name)

    def proxies(self, channel: Channel | None = None) -> list[PhoneNumber]:
        found = {rule.proxy for (_, ch), rule in self._by_route.items() if channel in (None, ch)}
        return sorted(found)

    def screen(self, rule: Rule, phone: str) -> str | None:
        """Why ``phone`` may not use ``rule``, or None when it may. Deny wins over allow;
        an empty allow list admits everyone."""
        if rule.deny.covers(phone):
            return f"this number is not accepted on the {rule.name} line"
        if not rule.allow.empty and not rule.allow.covers(phone):
            return f"only some numbers are accepted on the {rule.name} line"
        return None

    def parse_dial(self, text: str) -> Dial | None:
        return parse_dial(text, self.directory)

    def alias_of(self, wallet: str) -> str | None:
        return self._alias_of.get(wallet)

    def sender_label(self, rule: Rule, wallet: str) -> str:
        """The prefix for text ``wallet`` sends to a phone through ``rule``."""
        alias = self.alias_of(wallet)
        short = short_address(wallet)
        return render_label(rule.sender_label, label=alias or short, alias=alias or "",
                            address=wallet, short=short, rule=rule.name)
