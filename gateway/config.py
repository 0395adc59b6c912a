"""The gateway's configuration: YAML parsed once into frozen, typed objects.

``load_config(path)`` reads the file; ``parse_config(mapping, base_dir=...)`` does the
rest: ``${ENV}`` interpolation, placeholder refusal, ``generate`` secrets
(config_sources.py), then pydantic validation and the checks that span sections (unique
rule names, one rule per proxy and channel, aliases that resolve). Every problem found
is collected into one ``ConfigError`` whose entries name the key path.

Paths: ``data_dir`` is relative to the config file's directory; every other relative
path (SQLite file, libxmtp database, devnode database) is relative to ``data_dir``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from eth_account import Account
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway import config_sources
from gateway.config_sources import KeyPath, Problems, format_path
from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel
from gateway.domain.phones import is_country_code, parse_phone
from gateway.domain.policy import OutboundPolicy, WhatsAppTemplate
from gateway.domain.rules import (
    ALIAS_PATTERN,
    DEFAULT_SENDER_LABEL,
    LABEL_VARIABLES,
    Rule,
    RuleBook,
    RuleMode,
    Screen,
    label_fields,
    normalize_address,
)
from gateway.errors import BadRequest, ConfigError

# --- field types -------------------------------------------------------------------------


def _e164(value: str) -> PhoneNumber:
    try:
        return parse_phone(value)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None


def _wallet(value: str) -> WalletAddress:
    wallet = normalize_address(value)
    if wallet is None:
        if re.fullmatch(r"0[xX][0-9a-fA-F]{40}", value):
            raise ValueError("wallet address has a wrong EIP-55 checksum (a typo?)")
        raise ValueError("not a wallet address (0x and 40 hex digits)")
    return wallet


def _wallet_or_alias(value: str) -> str:
    if value.lower().startswith("0x"):
        return _wallet(value)
    return _alias(value)


def _alias(value: str) -> str:
    alias = value.lstrip("@").lower()
    if not ALIAS_PATTERN.fullmatch(alias):
        raise ValueError("an alias is 1-32 of a-z, 0-9, '_', '.', '-', starting with a "
                         "letter or digit")
    return alias


def _country(value: str) -> str:
    code = value.upper()
    if not is_country_code(code):
        raise ValueError(f"not an ISO 3166 country code with phone numbers: {value!r}")
    return code


def _prefix(value: str) -> str:
    if not re.fullmatch(r"\+\d{1,15}", value):
        raise ValueError("a number prefix is '+' and 1 to 15 digits, e.g. +44 or +1555")
    return value


def _private_key(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
        raise ValueError("not a private key (0x and 64 hex digits)")
    try:
        Account.from_key(text)
    except ValueError:
        raise ValueError("not a valid secp256k1 private key") from None
    return SecretStr(text if text.startswith("0x") else "0x" + text)


def _key_bytes(value: SecretStr) -> SecretStr:
    try:
        raw = base64.b64decode(value.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, not {len(raw)}")
    return value


def _hex32(value: SecretStr) -> SecretStr:
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", value.get_secret_value()):
        raise ValueError("must be 64 hex digits (32 bytes)")
    return value


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError("not an http(s) URL without query or fragment")
    return value.rstrip("/")


E164 = Annotated[str, AfterValidator(_e164)]
Wallet = Annotated[str, AfterValidator(_wallet)]
WalletOrAlias = Annotated[str, AfterValidator(_wallet_or_alias)]
Alias = Annotated[str, AfterValidator(_alias)]
Country = Annotated[str, AfterValidator(_country)]
Prefix = Annotated[str, AfterValidator(_prefix)]
PrivateKey = Annotated[SecretStr, AfterValidator(_private_key)]
DatabaseKey = Annotated[SecretStr, AfterValidator(_key_bytes)]
Hex32Key = Annotated[SecretStr, AfterValidator(_hex32)]
HttpUrl = Annotated[str, AfterValidator(_url)]
Port = Annotated[int, Field(ge=0, le=65535)]
Positive = Annotated[float, Field(gt=0)]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                     BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]


def _data_path(value: Any, info: ValidationInfo) -> Any:
    """Relative paths live under data_dir (given in the validation context)."""
    if not isinstance(value, str | Path):
        return value  # the Path validation that follows names the problem
    path = Path(value).expanduser()
    data_dir = (info.context or {}).get("data_dir")
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir) / path
    return path


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- sections ----------------------------------------------------------------------------


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    # The URL Twilio calls; webhook signatures are checked against public_url + path.
    # Unset: http://host:port (loopback for a wildcard host), right for local runs.
    public_url: HttpUrl = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(65536, ge=1024)
    log_format: Literal["plain", "json"] = "plain"
    log_level: LogLevel = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _local_public_url(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("public_url") is None:
            host = str(data.get("host", "127.0.0.1"))
            if host in ("0.0.0.0", "::", ""):  # noqa: S104 - recognising, not binding
                host = "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            data = {**data, "public_url": f"http://{host}:{data.get('port', 8080)}"}
        return data


class DatabaseConfig(_Section):
    # repr=False: a PostgreSQL URL may carry a password. Use ``safe_url`` for display.
    url: str = Field("sqlite+aiosqlite:///gateway.db", repr=False, validate_default=True)
    encryption_keys: dict[str, DatabaseKey] = Field(min_length=1)
    active_key: str

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str, info: ValidationInfo) -> str:
        found = re.fullmatch(r"sqlite\+aiosqlite:///(?P<path>.*)", value)
        if found:
            path = found.group("path")
            if path in ("", ":memory:") or path.startswith("file:"):
                return value
            return "sqlite+aiosqlite:///" + str(_data_path(path, info))
        if value.startswith("postgresql+asyncpg://"):
            return value
        raise ValueError("use sqlite+aiosqlite:///PATH or postgresql+asyncpg://...")

    @field_validator("encryption_keys")
    @classmethod
    def _key_ids(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key_id in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", key_id):
                raise ValueError(f"key id {key_id!r}: use 1-32 of A-Z a-z 0-9 _ -")
        return value

    @model_validator(mode="after")
    def _active_key_exists(self) -> DatabaseConfig:
        if self.active_key not in self.encryption_keys:
            raise ValueError(f"active_key {self.active_key!r} is not in encryption_keys")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def safe_url(self) -> str:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", self.url)

    def key_bytes(self) -> dict[str, bytes]:
        return {key_id: base64.b64decode(secret.get_secret_value())
                for key_id, secret in self.encryption_keys.items()}


class SimulatorConfig(_Section):
    embedded: bool = False  # start the Twilio simulator inside the gateway
    port: Port = 0  # 0: any free port


class RateLimitsConfig(_Section):
    default_per_second: Positive = 1.0  # a US long code sends 1 message/s
    numbers: dict[E164, Positive] = {}

    def for_number(self, proxy: str) -> float:
        return self.numbers.get(proxy, self.default_per_second)


class RetryConfig(_Section):
    max_attempts: int = Field(8, ge=1)
    base_delay_seconds: Positive = 1.0
    max_delay_seconds: Positive = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_delay_seconds < self.base_delay_seconds:
            raise ValueError("max_delay_seconds is below base_delay_seconds")
        return self


class TwilioConfig(_Section):
    account_sid: str
    auth_token: SecretStr | None = None  # none: every webhook is refused (fail closed)
    api_base_url: HttpUrl | None = None  # none: api.twilio.com (or the embedded simulator)
    simulator: SimulatorConfig = SimulatorConfig()
    send_timeout_seconds: Positive = 15.0
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    retry: RetryConfig = RetryConfig()

    @field_validator("account_sid")
    @classmethod
    def _sid(cls, value: str) -> str:
        if not re.fullmatch(r"AC[0-9a-f]{32}", value):
            raise ValueError("an account SID is AC and 32 lowercase hex digits")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> TwilioConfig:
        if self.simulator.embedded and self.api_base_url is not None:
            raise ValueError("api_base_url must be empty when simulator.embedded is true "
                             "(the gateway points the client at its own simulator)")
        return self


class DevnodeConfig(_Section):
    embedded: bool = False  # run the local XMTP node inside the gateway process
    db: Annotated[Path, BeforeValidator(_data_path)] = Field(Path("devnode.db"),
                                                             validate_default=True)
    port: Port = 0  # 0: any free port


class XmtpConfig(_Section):
    env: Literal["local", "dev", "production"] = "local"
    node_url: HttpUrl | None = None
    # Built from {} at validation (not a shared instance) so its path meets data_dir.
    devnode: DevnodeConfig = Field(default_factory=dict, validate_default=True)
    wallet_key: PrivateKey  # the gateway's own XMTP identity
    db_path: Annotated[Path, BeforeValidator(_data_path)] = Field(Path("xmtp/gateway.db3"),
                                                                  validate_default=True)
    db_encryption_key: Hex32Key  # libxmtp encrypts its database with it

    @model_validator(mode="after")
    def _node(self) -> XmtpConfig:
        if self.devnode.embedded:
            if self.env != "local":
                raise ValueError("devnode.embedded needs env: local")
            if self.node_url is not None:
                raise ValueError("node_url must be empty when devnode.embedded is true")
        elif self.env == "local" and self.node_url is None:
            raise ValueError("env local needs node_url, or devnode.embedded: true")
        return self

    @property
    def wallet_address(self) -> WalletAddress:
        return _address_of(self.wallet_key)

    def db_encryption_key_bytes(self) -> bytes:
        return bytes.fromhex(self.db_encryption_key.get_secret_value().removeprefix("0x"))


def _address_of(key: SecretStr) -> WalletAddress:
    return WalletAddress(Account.from_key(key.get_secret_value()).address)


class ApiConfig(_Section):
    # Bearer tokens for the REST API; none: the API is disabled.
    tokens: tuple[Annotated[SecretStr, Field(min_length=16)], ...] = ()


class WebhooksConfig(_Section):
    urls: tuple[HttpUrl, ...] = ()
    secret: SecretStr | None = None  # signs each post (HMAC-SHA256)

    @model_validator(mode="after")
    def _signed(self) -> WebhooksConfig:
        if self.urls and self.secret is None:
            raise ValueError("webhooks.urls need webhooks.secret to sign the posts")
        return self


class DemoConfig(_Section):
    """A wallet for ``gateway demo``; its address joins the directory under ``alias``."""

    wallet_key: PrivateKey
    alias: Alias = "demo"

    @property
    def wallet_address(self) -> WalletAddress:
        return _address_of(self.wallet_key)


class ScreenConfig(_Section):
    prefixes: tuple[Prefix, ...] = ()
    countries: tuple[Country, ...] = ()


class TemplateConfig(_Section):
    content_sid: str
    variables: dict[str, str] = {}

    @field_validator("content_sid")
    @classmethod
    def _sid(cls, value: str) -> str:
        if not re.fullmatch(r"HX[0-9a-f]{32}", value):
            raise ValueError("a content SID is HX and 32 lowercase hex digits")
        return value


class OutboundConfig(_Section):
    allow_unsolicited: bool = False  # may text phones that never texted in (SMS pumping!)
    per_phone_daily: int | None = Field(None, ge=1)
    per_rule_daily: int | None = Field(None, ge=1)
    whatsapp_template: TemplateConfig | None = None  # the only thing sent outside 24 h


class RuleConfig(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    proxy: E164
    channels: tuple[Literal["sms", "whatsapp"], ...] = ("sms",)
    mode: Literal["fixed", "dial"] = "fixed"
    wallets: tuple[WalletOrAlias, ...] = Field((), validate_default=True)
    allow: ScreenConfig = ScreenConfig()
    deny: ScreenConfig = ScreenConfig()
    greeting: str | None = None
    help: str | None = None
    sender_label: str = DEFAULT_SENDER_LABEL
    outbound: OutboundConfig = OutboundConfig()

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one channel (sms, whatsapp)")
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value

    @field_validator("sender_label")
    @classmethod
    def _label(cls, value: str) -> str:
        unknown = label_fields(value) - LABEL_VARIABLES
        if unknown:
            raise ValueError(f"unknown variable(s) {', '.join(sorted(unknown))}; use "
                             f"{', '.join(sorted(LABEL_VARIABLES))}")
        return value

    # A field validator (not a model one) so it still runs when other fields fail.
    @field_validator("wallets", mode="after")
    @classmethod
    def _wallets_for_mode(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        mode = info.data.get("mode")
        if mode == "fixed" and not value:
            raise ValueError("a fixed rule needs one or more wallets")
        if mode == "dial" and value:
            raise ValueError("a dial rule has no wallets: the phone names one")
        if len(set(value)) != len(value):
            raise ValueError("a wallet is listed twice")
        return value


class GatewayConfig(_Section):
    data_dir: Path
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig
    twilio: TwilioConfig
    xmtp: XmtpConfig
    api: ApiConfig = ApiConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    directory: dict[Alias, Wallet] = {}
    demo: DemoConfig | None = None
    rules: tuple[RuleConfig, ...] = ()

    @property
    def wallet_directory(self) -> dict[str, WalletAddress]:
        """Aliases for dial mode: the configured directory plus the demo wallet."""
        found = {alias: WalletAddress(wallet) for alias, wallet in self.directory.items()}
        if self.demo is not None:
            found[self.demo.alias] = self.demo.wallet_address
        return found

    def rulebook(self) -> RuleBook:
        directory = self.wallet_directory
        return RuleBook([_to_rule(rule, directory) for rule in self.rules], directory)

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for the log filter to redact if one ever leaks."""
        found = [s.get_secret_value() for s in self.database.encryption_keys.values()]
        found += [self.xmtp.wallet_key.get_secret_value(),
                  self.xmtp.db_encryption_key.get_secret_value()]
        found += [token.get_secret_value() for token in self.api.tokens]
        for maybe in (self.twilio.auth_token, self.webhooks.secret,
                      self.demo.wallet_key if self.demo else None):
            if maybe is not None:
                found.append(maybe.get_secret_value())
        password = re.search(r"://[^:/@]*:([^@]*)@", self.database.url)
        if password:
            found += [self.database.url, password.group(1)]
        return [value for value in found if value]


def _to_rule(rule: RuleConfig, directory: Mapping[str, WalletAddress]) -> Rule:
    template = rule.outbound.whatsapp_template
    return Rule(
        name=rule.name,
        proxy=PhoneNumber(rule.proxy),
        channels=frozenset(Channel(ch) for ch in rule.channels),
        mode=RuleMode(rule.mode),
        wallets=tuple(WalletAddress(w) if w.startswith("0x") else directory[w]
                      for w in rule.wallets),
        allow=Screen(rule.allow.prefixes, frozenset(rule.allow.countries)),
        deny=Screen(rule.deny.prefixes, frozenset(rule.deny.countries)),
        greeting=rule.greeting,
        help_text=rule.help,
        sender_label=rule.sender_label,
        outbound=OutboundPolicy(
            allow_unsolicited=rule.outbound.allow_unsolicited,
            per_phone_daily=rule.outbound.per_phone_daily,
            per_rule_daily=rule.outbound.per_rule_daily,
            whatsapp_template=WhatsAppTemplate(template.content_sid, dict(template.variables))
            if template else None,
        ),
    )


# --- loading -----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, persist_secrets: bool = True,
                env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Reads and validates a YAML config. Raises ConfigError listing every problem."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {file}: {exc.strerror or exc}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"{file} is not valid YAML: {exc}")]) from None
    return parse_config(raw, base_dir=file.resolve().parent, persist_secrets=persist_secrets,
                        env=env)


def parse_config(raw: Any, *, base_dir: str | os.PathLike[str],
                 persist_secrets: bool = True,
                 env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validates a config mapping. ``base_dir`` anchors a relative data_dir (the config
    file's directory). ``generate`` secrets are kept in data_dir unless
    ``persist_secrets`` is false."""
    if not isinstance(raw, Mapping):
        raise ConfigError([("", "the config must be a mapping of sections")])
    problems: Problems = []
    raw = config_sources.interpolate(raw, os.environ if env is None else env, problems)
    problems += config_sources.find_placeholders(raw)
    data_dir = _resolve_data_dir(raw, Path(base_dir), problems)
    raw = config_sources.resolve_generated(raw, data_dir, problems, persist=persist_secrets)
    problems += _cross_checks(raw)
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(
            {**raw, "data_dir": str(data_dir)}, context={"data_dir": data_dir})
    except ValidationError as exc:
        # A value already reported (an unset ${VAR}, a placeholder) is not reported again.
        seen = {path for path, _ in problems}
        problems += [found for found in (_describe(error, raw) for error in exc.errors())
                     if found[0] not in seen]
    if problems or config is None:
        raise ConfigError(_unique(problems))
    return config


def _resolve_data_dir(raw: Mapping[str, Any], base_dir: Path, problems: Problems) -> Path:
    value = raw.get("data_dir", "data")
    if not isinstance(value, str) or not value.strip():
        problems.append(("data_dir", "must be a directory path"))
        value = "data"
    return (base_dir / Path(value).expanduser()).resolve()


def _describe(error: Any, raw: Mapping[str, Any]) -> tuple[str, str]:
    loc: KeyPath = tuple(part for part in error["loc"]
                         if not (isinstance(part, str) and "[" in part))  # union branches
    message: str = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key" + _did_you_mean(loc, raw)
    elif error["type"] == "missing":
        message = "required"
    else:
        message = message.removeprefix("Value error, ")
    return format_path(loc), message


def _did_you_mean(loc: KeyPath, raw: Mapping[str, Any]) -> str:
    """Suggests the known key a misspelt one was probably meant to be."""
    model: Any = GatewayConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field else None
    if model is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _cross_checks(raw: Mapping[str, Any]) -> Problems:
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


def _unique(problems: Problems) -> Problems:
    return list(dict.fromkeys(problems))
