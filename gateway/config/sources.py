"""What happens to the YAML before it is validated: ``${ENV}`` interpolation, placeholder
detection, ``generate`` secrets kept in ``<data_dir>/secrets.yaml``, and the checks
that span rules (unique names, one rule per route, aliases that resolve).

Each step walks the raw mapping with the key path of every value, so a problem is
reported as ``rules[2].proxy: ...`` like the validation errors that follow.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway import envrefs
from gateway.domain.phones import parse_phone
from gateway.errors import BadRequest

Problems = list[tuple[str, str]]
KeyPath = tuple[str | int, ...]

GENERATE = "generate"
SECRETS_FILE = "secrets.yaml"


# Whole-value matches only: "changeme" is a placeholder, "http://example.org" is not.
_PLACEHOLDER = re.compile(
    r"""(?ix)
    change[-_ ]?me | replace[-_ ]?me | todo | fixme | tbd | placeholder | secret
    | x{3,} | \.{3} | … | <.*> | your[-_ ].*[-_ ]here | insert[-_ ].*
    """
)

# The secp256k1 group order: a private key must be below it and not zero.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAEDCE6AF48A03BBFD25E8CD0364141


def format_path(path: KeyPath) -> str:
    """("rules", 2, "proxy") -> "rules[2].proxy"; odd keys are quoted: numbers["+1555"]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def walk(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every leaf (non-mapping, non-list value) with its key path."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, (*path, index))
    else:
        yield path, value


def _map_leaves(value: Any, func: Callable[[KeyPath, Any], Any], path: KeyPath = ()) -> Any:
    if isinstance(value, Mapping):
        return {key: _map_leaves(item, func, (*path, str(key))) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_leaves(item, func, (*path, index)) for index, item in enumerate(value)]
    return func(path, value)


# --- where each value is written --------------------------------------------------------

# What parse_config says of text given as a YAML number; load_config, which has the
# text, shows the value as it was written (YAML reads +15550100002 as 15550100002).
NUMBER_NOT_TEXT = "a number where text is expected: quote it"
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
_LAST_KEY = re.compile(r'(?:\.[^.\[]+|\[\d+\]|\["[^"]*"\])$')


@dataclass(frozen=True, slots=True)
class Place:
    line: int  # 1-based
    number_written: str | None  # a scalar YAML read as a number: its text as written


class Places:
    """Where each key path of a config is written in its YAML text (best effort: keys
    are taken as written, anchors and merge keys are not followed)."""

    def __init__(self, text: str) -> None:
        self._places: dict[str, Place] = {}
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return
        if root is not None:
            self._visit(root, (), root.start_mark.line)

    def _visit(self, node: yaml.Node, path: KeyPath, line: int) -> None:
        written = (node.value if isinstance(node, yaml.ScalarNode) and node.tag in _NUMBER_TAGS
                   else None)
        self._places.setdefault(format_path(path), Place(line + 1, written))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    self._visit(value, (*path, str(key.value)), key.start_mark.line)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._visit(item, (*path, index), item.start_mark.line)

    def line_of(self, path: str) -> int | None:
        """The line of ``path``, or of its nearest ancestor written in the file."""
        while True:
            place = self._places.get(path)
            if place is not None:
                return place.line
            if not path:
                return None
            path = _LAST_KEY.sub("", path) if _LAST_KEY.search(path) else ""

    def number_written(self, path: str) -> str | None:
        place = self._places.get(path)
        return place.number_written if place else None

    def explain(self, problems: Problems) -> Problems:
        """The problems in the order of their place in the file (those of no place
        first), a number that should be text shown as it was written."""
        def message(path: str, text: str) -> str:
            written = self.number_written(path)
            if text != NUMBER_NOT_TEXT or written is None:
                return text
            return f'{written} is read by YAML as a number: quote it, "{written}"'

        def order(problem: tuple[int, tuple[str, str]]) -> tuple[int, int]:
            index, (path, _) = problem
            line = self.line_of(path) if path else 0
            return (line if line is not None else 1 << 30, index)

        return [(path, message(path, text))
                for _, (path, text) in sorted(enumerate(problems), key=order)]


def yaml_error(file: Path, exc: yaml.YAMLError) -> str:
    """A YAML syntax error naming the file, line and column."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "not valid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return (f"{file}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
                f"{problem}{context}")
    return f"{file} is not valid YAML: {exc}"


# --- ${ENV} ----------------------------------------------------------------------------


def interpolate(raw: Any, env: Mapping[str, str], problems: Problems) -> Any:
    """Replaces ``${VAR}`` and ``${VAR:-default}`` in every string value (keys are left
    alone). The default applies when VAR is unset or empty, as in the shell; ``$$`` is a
    literal ``$``. A missing variable without default is a problem at that key path."""

    def one(path: KeyPath, value: Any) -> Any:
        if not isinstance(value, str) or "$" not in value:
            return value

        def unset(name: str) -> None:
            problems.append((format_path(path), f"environment variable {name} is not set"))

        result = envrefs.expand(value, env, unset)
        leftover = envrefs.malformed(value)
        if leftover:
            problems.append((format_path(path),
                             f"malformed reference {leftover!r} (use ${{NAME}} "
                             "or ${NAME:-default})"))
        return result

    return _map_leaves(raw, one)


# --- placeholders ----------------------------------------------------------------------


def find_placeholders(raw: Any) -> Problems:
    return [(format_path(path), f"placeholder value {value!r}: put the real value here")
            for path, value in walk(raw)
            if isinstance(value, str) and _PLACEHOLDER.fullmatch(value.strip())]


# --- generated secrets -----------------------------------------------------------------


def _random_private_key() -> str:
    while True:
        key = secrets.token_bytes(32)
        if 0 < int.from_bytes(key, "big") < _SECP256K1_N:
            return "0x" + key.hex()


GENERATORS: dict[str, Callable[[], str]] = {
    "database_key": lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
    "private_key": _random_private_key,
    "hex32": lambda: secrets.token_hex(32),
    "token": lambda: secrets.token_urlsafe(32),
    "account_sid": lambda: "AC" + secrets.token_hex(16),
}


def generatable(path: KeyPath, raw: Mapping[str, Any]) -> str | None:
    """Which generator a key path may use for ``generate``, or None when it may not."""
    simulated = _dig(raw, ("twilio", "simulator", "embedded")) is True
    match path:
        case ("database", "encryption_keys", str()):
            return "database_key"
        case ("xmtp" | "demo", "wallet_key"):
            return "private_key"
        case ("xmtp", "db_encryption_key"):
            return "hex32"
        case ("webhooks", "secret") | ("api", "tokens", int()):
            return "token"
        case ("twilio", "auth_token") if simulated:
            return "token"
        case ("twilio", "account_sid") if simulated:
            return "account_sid"
    return None


def _dig(raw: Any, path: KeyPath) -> Any:
    for part in path:
        if isinstance(part, str) and isinstance(raw, Mapping):
            raw = raw.get(part)
        elif isinstance(part, int) and isinstance(raw, list) and part < len(raw):
            raw = raw[part]
        else:
            return None
    return raw


def resolve_generated(raw: Any, data_dir: Path, problems: Problems, *, persist: bool,
                      made_up: set[str] | None = None) -> Any:
    """Replaces every ``generate`` value by a secret kept in ``<data_dir>/secrets.yaml``:
    made with ``secrets`` the first time, read back afterwards, so restarts keep the same
    wallet and database key. With ``persist=False`` (check-config) nothing is written:
    values already in the file are used, others are made up for this run only, and their
    key paths are added to ``made_up``."""
    wanted: dict[str, str] = {}
    for path, value in walk(raw):
        if value != GENERATE:
            continue
        kind = generatable(path, raw) if isinstance(raw, Mapping) else None
        if kind is None and path[:1] == ("rules",):
            continue  # rules hold no secrets: there it is text (a greeting, a variable)
        if kind is None:
            problems.append((format_path(path), "'generate' is not supported for this key"))
        else:
            wanted[format_path(path)] = kind
    if not wanted:
        return raw
    try:
        stored = _read_or_extend(data_dir / SECRETS_FILE, wanted, persist=persist,
                                 made_up=set() if made_up is None else made_up)
    except (OSError, ValueError) as exc:
        for key in wanted:
            problems.append((key, f"cannot keep a generated secret in {data_dir / SECRETS_FILE}:"
                                  f" {exc}"))
        return raw

    def one(path: KeyPath, value: Any) -> Any:
        key = format_path(path)
        return stored[key] if value == GENERATE and key in stored else value

    return _map_leaves(raw, one)


def _read_or_extend(file: Path, wanted: Mapping[str, str], *, persist: bool,
                    made_up: set[str]) -> dict[str, str]:
    if not persist:
        stored = _read_secrets(file) if file.exists() else {}
        made_up.update(key for key in wanted if not stored.get(key))
        return {key: stored.get(key) or GENERATORS[kind]() for key, kind in wanted.items()}
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Two processes starting at once (several gateways on one PostgreSQL) must agree.
    with open(file.with_name(file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = _read_secrets(file) if file.exists() else {}
        missing = {key: GENERATORS[kind]() for key, kind in wanted.items() if key not in stored}
        if missing:
            stored.update(missing)
            _write_secrets(file, stored)
    return stored


def _read_secrets(file: Path) -> dict[str, str]:
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"it is readable by others (mode {mode:o}); run chmod 600 on it")
    loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()):
        raise ValueError("it is not a mapping of key path to secret")
    return loaded


def _write_secrets(file: Path, stored: Mapping[str, str]) -> None:
    text = ("# Secrets generated by the gateway for config values set to 'generate'.\n"
            "# Keep this file: it holds the gateway's wallet and database keys.\n"
            + yaml.safe_dump(dict(sorted(stored.items())), default_flow_style=False))
    partial = file.with_name(file.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, file)


# --- checks across rules and sections ---------------------------------------------------


def cross_checks(raw: Mapping[str, Any]) -> Problems:
    """Checks that span rules and sections, run on the raw mapping so they are reported
    even when other parts fail validation. Malformed entries are skipped here: field
    validation reports them."""
    problems: Problems = []
    rules = raw.get("rules")
    if not isinstance(rules, list):
        return problems
    aliases = _raw_aliases(raw, problems)
    names: dict[str, int] = {}
    routes: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        name = rule.get("name")
        if isinstance(name, str):
            if name in names:
                problems.append((f"rules[{index}].name",
                                 f"duplicate rule name {name!r} (also rules[{names[name]}])"))
            names.setdefault(name, index)
        proxy = _try_phone(rule.get("proxy"))
        channels = rule.get("channels", ["sms"])
        if proxy is not None and isinstance(channels, list):
            for channel in channels:
                if not isinstance(channel, str):
                    continue
                if (proxy, channel) in routes:
                    problems.append((f"rules[{index}].proxy",
                                     f"{proxy} on {channel} is already claimed by "
                                     f"rules[{routes[(proxy, channel)]}]"))
                routes.setdefault((proxy, channel), index)
        wallets = rule.get("wallets")
        if isinstance(wallets, list):
            for w_index, wallet in enumerate(wallets):
                if (isinstance(wallet, str) and not wallet.lower().startswith("0x")
                        and wallet.lstrip("@").lower() not in aliases):
                    problems.append((f"rules[{index}].wallets[{w_index}]",
                                     f"unknown alias {wallet!r}: add it to directory"))
    return problems


def _raw_aliases(raw: Mapping[str, Any], problems: Problems) -> set[str]:
    directory = raw.get("directory")
    aliases: set[str] = set()
    if isinstance(directory, Mapping):
        for key in directory:
            alias = str(key).lstrip("@").lower()
            if alias in aliases:
                problems.append((format_path(("directory", str(key))),
                                 f"alias {alias!r} is listed twice"))
            aliases.add(alias)
    demo = raw.get("demo")
    if isinstance(demo, Mapping):
        demo_alias = str(demo.get("alias", "demo")).lower()
        if demo_alias in aliases:
            problems.append(("demo.alias",
                             f"alias {demo_alias!r} is already in directory"))
        aliases.add(demo_alias)
    return aliases


def _try_phone(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_phone(value)
    except BadRequest:
        return None
