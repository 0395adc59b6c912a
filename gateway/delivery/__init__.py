"""The one outbox engine (``engine.Outbox``: lanes, leases, claims, pacing per sender
key, backoff, reconciling) and the channels that plug into it (``phone``, ``chat``)."""

from gateway.delivery.backoff import Backoff
from gateway.delivery.chat import ChatChannel
from gateway.delivery.engine import EngineSettings, Outbox
from gateway.delivery.holder import Holder, holder_id_for
from gateway.delivery.pacing import Pacer, PacingSettings, WindowSettings
from gateway.delivery.phone import PhoneChannel, PhoneSettings

__all__ = ["Backoff", "ChatChannel", "EngineSettings", "Holder", "Outbox", "Pacer",
           "PacingSettings", "PhoneChannel", "PhoneSettings", "WindowSettings",
           "holder_id_for"]
