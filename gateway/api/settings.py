"""What the API needs from the gateway's config, gathered once into a frozen object so the
handlers never read the config tree (and tests can build one directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.models import Channel

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    secret: str | None = None
    attempts: int = 6  # the first try and five retries, backing off
    base_delay: float = 1.0
    max_delay: float = 60.0
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class ApiSettings:
    tokens: tuple[str, ...] = field(repr=False)
    """Bearer tokens that may call the API; none means the API is disabled (403)."""
    routes: frozenset[tuple[PhoneNumber, Channel]] = frozenset()
    """Our numbers with the channels a rule serves each on: a non-chat participant's
    (proxy_address, channel) must be one of them."""
    gateway_wallet: WalletAddress | None = None
    """The gateway's own XMTP identity, which may not join a conversation as a
    participant (it is in every group already, and would be sent every message)."""
    webhooks: WebhookSettings = WebhookSettings()
    event_poll_interval: float = 1.0
    """How often the event hub looks for events written by other processes."""
    heartbeat_interval: float = 15.0
    """An SSE comment line this often keeps proxies from closing an idle stream."""

    @property
    def proxies(self) -> frozenset[PhoneNumber]:
        """Our numbers, on whichever channel."""
        return frozenset(proxy for proxy, _channel in self.routes)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ApiSettings:
        tokens = tuple(t.get_secret_value() for t in config.api.tokens)
        routes = frozenset((rule.proxy, channel) for rule in config.rulebook().rules
                           for channel in rule.channels)
        hooks = config.webhooks
        secret = hooks.secret.get_secret_value() if hooks.secret is not None else None
        return cls(tokens=tokens, routes=routes, gateway_wallet=config.xmtp.wallet_address,
                   webhooks=WebhookSettings(urls=tuple(str(u) for u in hooks.urls),
                                            secret=secret))
