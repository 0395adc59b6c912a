"""The gateway's configuration: ``model`` (the typed, frozen objects and
``load_config``/``parse_config``), ``sources`` (what happens to the raw YAML before
validation), ``types`` (field types), ``report`` (``gateway check-config``)."""

from gateway.config.model import (
    GatewayConfig,
    XmtpConfig,
    load_config,
    parse_config,
)

__all__ = ["GatewayConfig", "XmtpConfig", "load_config", "parse_config"]
