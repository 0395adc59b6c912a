"""Logging set-up: plain or JSON lines, with phone numbers masked and secrets redacted.

Masking happens in the formatter, on the finished text (message, arguments, traceback,
extra fields alike), so no call site has to remember it. ``SecretStr`` values print as
asterisks by themselves; the plain values of the configured secrets are also redacted
should one ever end up in a message (an exception text quoting a URL, say).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from gateway.domain.phones import mask_text

REDACTED = "[redacted]"
# The loggers a chosen level applies to in full: the gateway's, and libxmtp's native log
# (gateway.xmtp.native_log; RUST_LOG chooses what libxmtp emits). Other libraries stay at
# INFO or above: asyncio's, grpc's or aiohttp's DEBUG output would bury the gateway's.
OWN_LOGGERS = ("gateway", "libxmtp")
_LIBRARY_FLOOR = logging.INFO
_MIN_SECRET_LENGTH = 8  # shorter "secrets" would redact ordinary words

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class Scrubber:
    """Masks E.164-looking numbers and redacts known secret values in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is redacted whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH},
                               key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return mask_text(text)


class PlainFormatter(logging.Formatter):
    def __init__(self, scrub: Scrubber) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, exc_info, and extras."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        # Values are scrubbed before encoding (JSON escaping could hide a secret from a
        # search on the finished line), and the line after (numbers in nested values).
        entry = {key: self._scrub(value) if isinstance(value, str) else value
                 for key, value in entry.items()}
        text = json.dumps(entry, default=lambda value: self._scrub(str(value)),
                          ensure_ascii=False)
        return self._scrub(text)


def setup_logging(format: Literal["plain", "json"] = "plain", level: str | int = "INFO", *,
                  secrets: Iterable[str] = (), stream: TextIO | None = None,
                  ) -> logging.Handler:
    """Installs one handler on the root logger (replacing one installed earlier by this
    function, so calling it twice does not double every line) and returns it. ``level``
    is the gateway's own loggers' (OWN_LOGGERS); other libraries log at INFO or above."""
    scrub = Scrubber(secrets)
    formatter = JsonFormatter(scrub) if format == "json" else PlainFormatter(scrub)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("gateway")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "gateway"]:
        root.removeHandler(old)
    root.addHandler(handler)
    number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    root.setLevel(max(number, _LIBRARY_FLOOR))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(number)
    return handler
