"""What the simulator keeps: messages, what each phone received, every send attempt,
every status callback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from gateway.testing.twilio_sim.media import SimMedia, media_json
from gateway.testing.twilio_sim.wire import API_VERSION


@dataclass(slots=True)
class SimMessage:
    """One Message resource as the simulator holds it."""

    sid: str
    account_sid: str
    to: str  # as given, with any whatsapp: prefix
    from_: str
    body: str
    media_urls: tuple[str, ...]
    status: str
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    status_callback: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None

    def to_json(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": format_datetime(self.date_created, usegmt=True),
            "date_sent": format_datetime(self.date_sent, usegmt=True) if self.date_sent else None,
            "date_updated": format_datetime(self.date_updated, usegmt=True),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": str(len(self.media_urls)),
            "num_segments": str(max(1, -(-len(self.body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


@dataclass(frozen=True, slots=True)
class ReceivedText:
    """What a phone received (recorded when the simulator accepts a send)."""

    sid: str
    phone: str  # E.164, no prefix
    from_: str  # E.164, no prefix
    channel: str  # "sms" or "whatsapp"
    body: str
    media_urls: tuple[str, ...]
    content_sid: str | None
    content_variables: str | None
    at: datetime
    media: tuple[SimMedia, ...] = ()  # what Twilio fetched from media_urls

    def to_json(self, *, with_data: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        data["media_urls"] = list(self.media_urls)
        data["media"] = media_json(self.media, with_data=with_data)
        data["at"] = self.at.isoformat()
        return data


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """Every create request, answered or not: ``at`` is the event loop's clock."""

    at: float
    from_: str
    to: str
    outcome: str  # "created", "rejected:<code>", "429", "500", "dropped", ...


@dataclass(frozen=True, slots=True)
class Callback:
    url: str
    form: Mapping[str, str]
    status: int | None  # the receiver's HTTP status; None when it could not be reached


@dataclass(frozen=True, slots=True)
class InboundResult:
    sid: str
    status: int
    body: str
