"""The gateway's configuration: YAML parsed once into frozen, typed objects.

``load_config(path)`` reads the file; ``parse_config(mapping, base_dir=...)`` does the
rest: ``${ENV}`` interpolation, placeholder refusal, ``generate`` secrets and the checks
that span rules (unique names, one rule per proxy and channel, aliases that resolve),
all in sources.py; then pydantic validation with the field types of
types.py. Every problem found is collected into one ``ConfigError`` whose
entries name the key path.

Paths: ``data_dir`` is relative to the config file's directory; every other relative
path (SQLite file, libxmtp database, devnode database) is relative to ``data_dir``.
"""

from __future__ import annotations

import base64
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config import sources as config_sources
from gateway.config.sources import KeyPath, Problems, format_path
from gateway.config.types import (
    E164,
    Alias,
    Country,
    DatabaseKey,
    DataPath,
    Hex32Key,
    HttpUrl,
    LogLevel,
    Port,
    Positive,
    Prefix,
    PrivateKey,
    Wallet,
    WalletOrAlias,
    address_of,
    data_path,
)
from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel
from gateway.domain.policy import OutboundPolicy, WhatsAppTemplate
from gateway.domain.rules import (
    DEFAULT_SENDER_LABEL,
    LABEL_VARIABLES,
    Rule,
    RuleBook,
    RuleMode,
    Screen,
    label_fields,
)
from gateway.errors import ConfigError
from gateway.listen import local_url


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
            data = {**data, "public_url": local_url(str(data.get("host", "127.0.0.1")),
                                                    data.get("port", 8080))}
        return data

    def listening_on(self, host: str | None = None, port: int | None = None) -> ServerConfig:
        """This section with another listen address. A public URL that is the local one
        of the old address (unset, or written out as in the embedded config) follows
        the new address: the embedded Twilio simulator signs its webhooks against it. A
        public URL configured otherwise (the address Twilio calls) stays."""
        new_host = self.host if host is None else host
        new_port = self.port if port is None else port
        follows = self.public_url == local_url(self.host, self.port)
        return self.model_copy(update={
            "host": new_host, "port": new_port,
            "public_url": local_url(new_host, new_port) if follows else self.public_url})


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
            return "sqlite+aiosqlite:///" + str(data_path(path, info))
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
    # A claimed send not finished within its lease (its process died) is reconciled then.
    lease_seconds: Positive = 120.0
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
    db: DataPath = Field(Path("devnode.db"),
                                                             validate_default=True)
    port: Port = 0  # 0: any free port
    # XMTP's caps, off unless set (the network: 10 and 256)
    max_installations: int | None = Field(None, ge=1)
    max_inbox_updates: int | None = Field(None, ge=1)
    # XMTP's per-client rate limits, off unless set (the network: 3000 writes and 20000
    # reads per rolling 300 s); refused with RESOURCE_EXHAUSTED as the network does
    max_writes: int | None = Field(None, ge=1)
    max_reads: int | None = Field(None, ge=1)
    rate_window_seconds: Positive = 300.0
    # count them per IP address, as the network does (every local client shares one);
    # else per connection
    rate_per_address: bool = False


class WriteBudgetConfig(_Section):
    """What XMTP's network lets one client write per rolling window (messages published,
    groups made, members changed, installations changed); each gateway identity is paced
    to ``writes * (1 - headroom)`` per ``window_seconds``."""

    writes: int = Field(3000, ge=1)  # XMTP's network: 3000
    window_seconds: Positive = 300.0  # XMTP's network: a rolling 5 minutes
    # left for writes the gateway does not count (libxmtp's own key updates, a wallet with
    # several installations welcomed at once) and for clocks that disagree
    headroom: float = Field(0.05, ge=0.0, lt=1.0)


class GatewayAuthConfig(_Section):
    """A credential libxmtp sends on every request to the XMTP Gateway Service."""

    # The header's whole value, e.g. "Bearer abc..."; none: no header is sent.
    token: SecretStr | None = None
    header: str = Field("authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")


class XmtpConfig(_Section):
    env: Literal["local", "dev", "production"] = "local"
    node_url: HttpUrl | None = None
    # XMTP's decentralised network: an XMTP Gateway Service (it holds the payer key).
    # Set: libxmtp talks to it and the nodes it names, not to node_url.
    gateway_host: HttpUrl | None = None
    gateway_auth: GatewayAuthConfig = GatewayAuthConfig()
    # Built from {} at validation (not a shared instance) so its path meets data_dir.
    devnode: DevnodeConfig = Field(default_factory=dict, validate_default=True)
    wallet_key: PrivateKey  # the gateway's own XMTP identity
    db_path: DataPath = Field(Path("xmtp/gateway.db3"),
                                                                  validate_default=True)
    db_encryption_key: Hex32Key  # libxmtp encrypts its database with it
    # Whether this process does the gateway's XMTP work (its installation, the stream,
    # groups, posts). false: webhooks, the API and Twilio only, leaving XMTP work to the
    # process that has it (through the shared PostgreSQL database); never an installation.
    worker: bool = True
    send_timeout_seconds: Positive = 30.0  # the longest one post into a group may take
    # A claimed post not finished within its lease is reconciled then (a keyed post
    # again); a process that died is noticed sooner, by its heartbeat.
    lease_seconds: Positive = 120.0
    # A node that does not answer is retried as long as it takes (the post may still
    # arrive); other errors give up after max_attempts.
    retry: RetryConfig = RetryConfig(max_attempts=10)
    write_budget: WriteBudgetConfig = WriteBudgetConfig()

    @model_validator(mode="after")
    def _node(self) -> XmtpConfig:
        if self.devnode.embedded:
            if self.env != "local":
                raise ValueError("devnode.embedded needs env: local")
            if self.node_url is not None:
                raise ValueError("node_url must be empty when devnode.embedded is true")
            if self.gateway_host is not None:
                raise ValueError("gateway_host must be empty when devnode.embedded is true "
                                 "(the devnode serves XMTP's v3 API only)")
        elif self.env == "local" and self.node_url is None and self.gateway_host is None:
            raise ValueError("env local needs node_url, or devnode.embedded: true")
        if self.gateway_auth.token is not None and self.gateway_host is None:
            raise ValueError("gateway_auth.token needs gateway_host")
        return self

    @property
    def wallet_address(self) -> WalletAddress:
        return address_of(self.wallet_key)

    def db_encryption_key_bytes(self) -> bytes:
        return bytes.fromhex(self.db_encryption_key.get_secret_value().removeprefix("0x"))


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
        return address_of(self.wallet_key)


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
    sms_only: bool = False  # files reach SMS phones as links, never as MMS


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


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]*/(\*|[a-z0-9][a-z0-9.+-]*)")
# Twilio's fully supported and commonly delivered types; see its accepted-MIME list.
DEFAULT_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "audio/mpeg",
                       "audio/ogg", "audio/amr", "audio/mp4", "video/mp4", "video/3gpp",
                       "application/pdf", "text/vcard")


class LocalMediaConfig(_Section):
    dir: DataPath = Field(Path("media"), validate_default=True)


class S3MediaConfig(_Section):
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(pattern=r"^([A-Za-z0-9._-]+/)*$")] = "media/"
    endpoint_url: HttpUrl | None = None  # none: AWS S3
    region: str = "us-east-1"
    access_key_id: str | None = None  # none (with no secret): the default AWS credentials
    secret_access_key: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # How each object is encrypted at rest: asked of the storage with every upload
    # (AES256: SSE-S3; aws:kms: SSE-KMS, with kms_key_id or the account's default key), so
    # an upload the storage cannot encrypt fails instead of resting in the clear; "bucket":
    # nothing asked, the bucket's own default applies (a MinIO without KMS refuses SSE).
    server_side_encryption: Literal["AES256", "aws:kms", "bucket"] = "AES256"
    kms_key_id: str | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> S3MediaConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give access_key_id and secret_access_key together, or neither")
        if self.kms_key_id is not None and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id needs server_side_encryption: aws:kms")
        return self


class MediaStorageConfig(_Section):
    backend: Literal["local", "s3"] = "local"
    local: LocalMediaConfig = Field(default_factory=dict, validate_default=True)
    s3: S3MediaConfig | None = None
    url_ttl_seconds: int = Field(7 * 86400, ge=60, le=7 * 86400)  # S3 presigns 7 days at most

    @model_validator(mode="after")
    def _s3_settings(self) -> MediaStorageConfig:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("backend s3 needs the s3 section (bucket, ...)")
        return self


class MediaConfig(_Section):
    max_item_bytes: int = Field(5_000_000, ge=1)
    max_message_bytes: int = Field(5_000_000, ge=1)  # Twilio's limit for one message
    max_items: int = Field(10, ge=1, le=10)  # Twilio takes 10 MediaUrl at most
    content_types: tuple[str, ...] = DEFAULT_MEDIA_TYPES  # "type/*" allows a whole type
    retention_days: Positive = 30.0
    fetch_timeout_seconds: Positive = 30.0
    # Fetch plain http and loopback URLs: for local development with the embedded
    # simulator only; never where strangers' URLs can reach this network.
    allow_insecure_urls: bool = False
    storage: MediaStorageConfig = Field(default_factory=dict, validate_default=True)
    # A phone's file up to this size goes into the group inline (an XMTP attachment);
    # larger ones as remote attachments (encrypted, uploaded, fetched by the wallets).
    # XMTP caps a message just under 1 MB, but libxmtp's Python bindings copy a message
    # into Rust a byte at a time (~0.36 ms of CPU per KB): inline is for small files.
    # 0 sends every file as a remote attachment.
    inline_max_bytes: int = Field(65_536, ge=0, le=900_000)
    # How long a wallet's file stays fetchable at the MediaUrl given to Twilio (the
    # send's own link; a link texted to a phone lasts storage.url_ttl_seconds).
    phone_url_ttl_seconds: int = Field(3600, ge=60, le=7 * 86400)

    @field_validator("content_types")
    @classmethod
    def _types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        lowered = tuple(v.strip().lower() for v in value)
        bad = [v for v in lowered if not _MEDIA_TYPE.fullmatch(v)]
        if bad:
            raise ValueError(f"not a media type: {', '.join(bad)} (e.g. image/png, image/*)")
        return lowered

    @model_validator(mode="after")
    def _budget(self) -> MediaConfig:
        if self.max_message_bytes < self.max_item_bytes:
            raise ValueError("max_message_bytes is below max_item_bytes")
        return self


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
    media: MediaConfig = Field(default_factory=dict, validate_default=True)

    @field_validator("xmtp")
    @classmethod
    def _xmtp_elsewhere(cls, xmtp: XmtpConfig, info: ValidationInfo) -> XmtpConfig:
        database = info.data.get("database")
        if not xmtp.worker:
            if database is not None and not database.url.startswith("postgresql"):
                raise ValueError("worker: false needs a database shared with the process "
                                 "that does the XMTP work: PostgreSQL")
            if xmtp.devnode.embedded:
                raise ValueError("worker: false with devnode.embedded: the devnode runs in "
                                 "the XMTP process; point node_url at it")
        return xmtp

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

    def listening_on(self, host: str | None = None, port: int | None = None) -> GatewayConfig:
        """This config with another listen address (see ServerConfig.listening_on)."""
        return self.model_copy(update={"server": self.server.listening_on(host, port)})

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for the log filter to redact if one ever leaks."""
        found = [s.get_secret_value() for s in self.database.encryption_keys.values()]
        found += [self.xmtp.wallet_key.get_secret_value(),
                  self.xmtp.db_encryption_key.get_secret_value()]
        if self.xmtp.gateway_auth.token is not None:
            found.append(self.xmtp.gateway_auth.token.get_secret_value())
        found += [token.get_secret_value() for token in self.api.tokens]
        for maybe in (self.twilio.auth_token, self.webhooks.secret,
                      self.demo.wallet_key if self.demo else None,
                      self.media.storage.s3.secret_access_key if self.media.storage.s3
                      else None):
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
            sms_only=rule.outbound.sms_only,
            whatsapp_template=WhatsAppTemplate(template.content_sid, dict(template.variables))
            if template else None,
        ),
    )


# --- loading -----------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, persist_secrets: bool = True,
                env: Mapping[str, str] | None = None,
                made_up: set[str] | None = None) -> GatewayConfig:
    """Reads and validates a YAML config. Raises ConfigError listing every problem.
    ``made_up``: see parse_config."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {file}: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"cannot read {file}: {_not_utf8(exc)}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("", config_sources.yaml_error(file, exc))]) from None
    try:
        return parse_config(raw, base_dir=file.resolve().parent,
                            persist_secrets=persist_secrets, env=env, made_up=made_up)
    except ConfigError as exc:
        raise ConfigError(config_sources.Places(text).explain(exc.problems)) from None


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def parse_config(raw: Any, *, base_dir: str | os.PathLike[str],
                 persist_secrets: bool = True,
                 env: Mapping[str, str] | None = None,
                 made_up: set[str] | None = None) -> GatewayConfig:
    """Validates a config mapping. ``base_dir`` anchors a relative data_dir (the config
    file's directory). ``generate`` secrets are kept in data_dir unless
    ``persist_secrets`` is false; then those not kept yet are made up for this run only,
    and their key paths (``demo.wallet_key``) are added to ``made_up`` when given."""
    if not isinstance(raw, Mapping):
        raise ConfigError([("", "the config must be a mapping of sections")])
    problems: Problems = []
    raw = config_sources.interpolate(raw, os.environ if env is None else env, problems)
    problems += config_sources.find_placeholders(raw)
    data_dir = _resolve_data_dir(raw, Path(base_dir), problems)
    raw = config_sources.resolve_generated(raw, data_dir, problems, persist=persist_secrets,
                                           made_up=made_up)
    problems += config_sources.cross_checks(raw)
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
    elif (error["type"] == "string_type" and isinstance(error["input"], int | float)
          and not isinstance(error["input"], bool)):
        message = config_sources.NUMBER_NOT_TEXT
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


def _unique(problems: Problems) -> Problems:
    return list(dict.fromkeys(problems))
