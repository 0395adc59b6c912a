"""libxmtp's own log (Rust, on the process's standard output) as records of the gateway's
logging: level-mapped, colour codes gone, one logger per Rust target."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest

from gateway.xmtp.native_log import NativeLine, parse, route_native_log

COLOURED = ("\x1b[2m2026-12-06T10:11:30.920295Z\x1b[0m \x1b[31mERROR\x1b[0m "
            "\x1b[2mxmtp_api_grpc::streams::escapable\x1b[0m\x1b[2m:\x1b[0m error in tonic "
            "stream status: 'The operation was cancelled'\n")


class TestALine:
    def test_loses_its_colour_codes_and_keeps_its_level_and_target(self) -> None:
        assert parse(COLOURED) == NativeLine(
            logging.ERROR, "libxmtp.xmtp_api_grpc.streams.escapable",
            "error in tonic stream status: 'The operation was cancelled'")

    @pytest.mark.parametrize(("level", "expected"), [
        ("TRACE", logging.DEBUG), ("DEBUG", logging.DEBUG), (" INFO", logging.INFO),
        (" WARN", logging.WARNING), ("ERROR", logging.ERROR)])
    def test_maps_rusts_levels_to_pythons(self, level: str, expected: int) -> None:
        line = parse(f"2026-12-06T10:15:24.088446Z {level} xmtpv3::mls: Creating client")
        assert line == NativeLine(expected, "libxmtp.xmtpv3.mls", "Creating client")

    def test_with_span_context_is_named_after_its_target(self) -> None:
        line = parse("2026-12-06T10:15:24.088446Z  INFO sync{inbox=\"ab\"}:group{id=1}: "
                     "xmtp_mls::groups: synced: 2 intents")
        assert line == NativeLine(logging.INFO, "libxmtp.xmtp_mls.groups", "synced: 2 intents")

    def test_without_a_header_continues_the_event_before_it(self) -> None:
        first = parse("2026-12-06T10:12:59.793169Z ERROR xmtp_mls::groups::mls_sync:"
                      "   failed to process a commit")
        assert first is not None
        assert parse("\tEpochMismatch\n", first) == NativeLine(
            logging.ERROR, "libxmtp.xmtp_mls.groups.mls_sync", "EpochMismatch")
        assert parse("   \n", first) is None

    def test_openmls_failing_to_decrypt_a_past_message_is_debug(self) -> None:
        line = parse("2026-12-06T11:43:39.555Z ERROR openmls::framing::private_message_in: "
                     "TooDistantInThePast")
        assert line is not None and line.level == logging.DEBUG
        assert line.logger == "libxmtp.openmls.framing.private_message_in"

    def test_a_workers_complaint_after_its_client_closed_is_debug(self) -> None:
        line = parse("2026-12-06T10:13:33.278886Z ERROR xmtp_mls::worker::disappearing_"
                     "messages: Failed to delete expired messages, error: "
                     "Platform(PoolNeedsConnection)")
        assert line is not None and line.level == logging.DEBUG


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("libxmtp")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class TestTheRoute:
    def test_what_native_code_writes_to_fd_1_becomes_records_and_prints_still_print(
            self, records: Records, capfd: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RUST_LOG", os.environ.get("RUST_LOG", "off"))  # restored after
        monkeypatch.delenv("NO_COLOR", raising=False)
        python_stdout = sys.stdout
        route = route_native_log()
        assert route is not None
        try:
            os.write(1, COLOURED.encode())  # as libxmtp writes: to the descriptor
            print("a print of Python's own")
        finally:
            route.close()
        assert [(r.name, r.levelno) for r in records.records] == [
            ("libxmtp.xmtp_api_grpc.streams.escapable", logging.ERROR)]
        assert capfd.readouterr().out == "a print of Python's own\n"
        os.write(1, b"after the route is closed\n")
        assert capfd.readouterr().out == "after the route is closed\n"
        assert sys.stdout is python_stdout
