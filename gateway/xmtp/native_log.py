"""libxmtp's own log, routed into the gateway's.

libxmtp (Rust, under the uniffi bindings) writes its tracing log to the process's
standard output, in its own format with ANSI colours, and the bindings offer no hook to
receive it instead. ``route_native_log`` makes file descriptor 1 a pipe that a thread
reads: each line becomes a record of the logger ``libxmtp.<its Rust target>`` at the
matching level, so it is formatted (plain or JSON), masked and filtered like every other
line of the gateway's log. Python's own ``sys.stdout`` keeps the real standard output.

``RUST_LOG`` still chooses what libxmtp emits (read once, when its first client starts);
unset, it is ``error`` here. ``server.log_level`` applies on top.

Not reached: SQLCipher's ``WARN CORE sqlcipherCodecAttach: no codec attached to db``,
which SQLCipher writes to standard error itself when libxmtp opens its database. It is
harmless (docs/bridge.md says why it cannot be turned off).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import BinaryIO

DEFAULT_FILTER = "error"  # RUST_LOG when unset
ROOT_LOGGER = "libxmtp"

LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
          "WARN": logging.WARNING, "ERROR": logging.ERROR}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "2026-01-02T03:04:05.678901Z ERROR span{a=1}: xmtp_mls::worker: message"
_HEADER = re.compile(r"^\d{4}-\d\d-\d\dT\S+\s+(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\s+"
                     r"(?P<rest>.*)$")
_TARGET = re.compile(r"^(?:\S*\{[^}]*\}:\s*)*(?P<target>[A-Za-z_]\w*(?:::\w+)*): "
                     r"(?P<message>.*)$", re.DOTALL)
# libxmtp's background workers (disappearing messages, key packages, pending leaves)
# outlive a client's release_db_connection, which is how a client is closed, and no API
# stops them: they say PoolNeedsConnection once a second until the process ends. After
# our own close that is expected, not an error.
_RELEASED = "PoolNeedsConnection"


@dataclass(frozen=True, slots=True)
class NativeLine:
    """One line of libxmtp's log, as a record of the gateway's."""

    level: int
    logger: str
    message: str


# openmls, the MLS library inside libxmtp, logs an ERROR for every message it cannot
# decrypt, and a catch-up after a restart meets its own past messages by the dozen
# ("TooDistantInThePast"); libxmtp handles those results and says what matters itself.
_OPENMLS = f"{ROOT_LOGGER}.openmls"


def parse(line: str, previous: NativeLine | None = None) -> NativeLine | None:
    """The record for one line of libxmtp's output; None for a blank one. A line with no
    header continues the event before it (openmls puts an error's cause on its own line)
    and takes its level and logger."""
    text = _ANSI.sub("", line).rstrip()
    if not text.strip():
        return None
    header = _HEADER.match(text)
    if header is None:
        if previous is None:
            return NativeLine(logging.INFO, ROOT_LOGGER, text.strip())
        return NativeLine(previous.level, previous.logger, text.strip())
    level = LEVELS[header["level"]]
    found = _TARGET.match(header["rest"])
    if found is None:
        logger, message = ROOT_LOGGER, header["rest"]
    else:
        logger = f"{ROOT_LOGGER}.{found['target'].replace('::', '.')}"
        message = found["message"]
    if _RELEASED in message or logger.startswith(_OPENMLS):
        level = min(level, logging.DEBUG)
    return NativeLine(level, logger, message)


class NativeLogRoute:
    """File descriptor 1 as a pipe into the logging module; ``close`` restores it.

    ``gateway serve`` never closes it: libxmtp's workers write until the process ends
    (see _RELEASED), and what they write after a restore would reach the terminal raw.
    """

    def __init__(self) -> None:
        os.environ.setdefault("RUST_LOG", DEFAULT_FILTER)
        # colour codes are stripped anyway; this spares libxmtp making them
        os.environ.setdefault("NO_COLOR", "1")
        if sys.stdout is not None:
            sys.stdout.flush()
        self._python_stdout = sys.stdout
        self._real_stdout = os.dup(1)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.close(write_fd)
        # Python's prints keep going where standard output went before
        self._stdout = io.TextIOWrapper(
            open(self._real_stdout, "wb", buffering=0, closefd=False),  # noqa: SIM115
            encoding=getattr(self._python_stdout, "encoding", None) or "utf-8",
            errors="backslashreplace", line_buffering=True)
        sys.stdout = self._stdout
        self._thread = threading.Thread(
            target=self._pump, args=(open(read_fd, "rb"),),  # noqa: SIM115 - the thread's
            name="libxmtp-log", daemon=True)
        self._thread.start()

    def _pump(self, pipe: BinaryIO) -> None:
        previous: NativeLine | None = None
        with pipe:
            for raw in pipe:
                try:
                    line = parse(raw.decode("utf-8", "replace"), previous)
                    if line is not None:
                        previous = line
                        logging.getLogger(line.logger).log(line.level, "%s", line.message)
                except Exception:  # noqa: BLE001 - the line goes out as it came instead
                    # this thread must keep reading: libxmtp blocks on a full pipe
                    os.write(self._real_stdout, raw)

    def close(self, timeout: float = 5.0) -> None:
        """Restores file descriptor 1, after the lines written so far are logged."""
        sys.stdout.flush()
        os.dup2(self._real_stdout, 1)  # closes the pipe's last write end: the pump ends
        self._thread.join(timeout)
        sys.stdout = self._python_stdout
        self._stdout.close()
        os.close(self._real_stdout)


def route_native_log() -> NativeLogRoute | None:
    """Routes libxmtp's log into the logging module from now on (see the module); None
    when the process has no standard output (libxmtp's writes go nowhere then)."""
    try:
        os.fstat(1)
    except OSError:
        return None
    return NativeLogRoute()
