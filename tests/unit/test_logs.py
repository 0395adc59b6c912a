import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from gateway.logs import OWN_LOGGERS, REDACTED, setup_logging

TOKEN = "f3b1a2c4d5e6f708192a3b4c5d6e7f80"


@pytest.fixture
def log() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    own = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    yield logging.getLogger("gateway.test")
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, own_level in own.items():
        logging.getLogger(name).setLevel(own_level)


class TestPlainLogs:
    def test_numbers_in_the_message_and_its_arguments_are_masked(
            self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "INFO", stream=out)
        log.info("text from %s to whatsapp:+15550100001 (%r)", "+447911123456",
                 {"From": "+12125551234"})
        line = out.getvalue()
        assert "+44******3456" in line and "whatsapp:+1******0001" in line
        assert "+1******1234" in line
        for number in ("447911123456", "15550100001", "12125551234"):
            assert number not in line

    def test_tracebacks_are_masked_too(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "INFO", stream=out)
        try:
            raise ValueError("no route for +15550100123")
        except ValueError:
            log.exception("failed")
        assert "ValueError: no route for +1******0123" in out.getvalue()
        assert "0100123" not in out.getvalue()

    def test_secrets_print_as_asterisks_or_are_redacted(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "INFO", secrets=[TOKEN, "short"], stream=out)
        log.warning("token %s, leaked %s, short word", SecretStr(TOKEN), f"x{TOKEN}y")
        line = out.getvalue()
        assert TOKEN not in line
        assert "**********" in line and f"x{REDACTED}y" in line
        assert "short word" in line  # too short to be treated as a secret

    def test_the_level_filters(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "warning", stream=out)
        log.info("quiet")
        log.warning("loud")
        assert "quiet" not in out.getvalue() and "loud" in out.getvalue()

    def test_setting_up_twice_does_not_double_lines(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "INFO", stream=io.StringIO())
        setup_logging("plain", "INFO", stream=out)
        log.info("once")
        assert out.getvalue().count("once") == 1


class TestJsonLogs:
    def test_one_object_per_line_with_extras_masked(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("json", "INFO", secrets=[TOKEN], stream=out)
        log.info("inbound %s", "+15550100123",
                 extra={"phone": "+447911123456", "raw": f"From=%2B15550100123&t={TOKEN}",
                        "nested": {"to": "+12125551234"}, "token": SecretStr(TOKEN)})
        entry = json.loads(out.getvalue())
        assert entry["level"] == "INFO" and entry["logger"] == "gateway.test"
        assert entry["message"] == "inbound +1******0123"
        assert entry["phone"] == "+44******3456"
        assert entry["raw"] == f"From=%2B1******0123&t={REDACTED}"
        assert entry["nested"] == {"to": "+1******1234"}
        assert entry["token"] == "**********"
        assert TOKEN not in out.getvalue()

    def test_exceptions_are_a_field(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("json", "INFO", stream=out)
        try:
            raise RuntimeError("to +15550100123")
        except RuntimeError:
            log.exception("send failed")
        entry = json.loads(out.getvalue())
        assert "RuntimeError: to +1******0123" in entry["exc_info"]


class TestLevels:
    def test_debug_is_the_gateways_own_and_other_libraries_stay_at_info(
            self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "debug", stream=out)
        log.debug("ours")
        logging.getLogger("libxmtp.xmtp_mls.groups").debug("libxmtp's, chosen by RUST_LOG")
        logging.getLogger("asyncio").debug("Using selector: EpollSelector")
        logging.getLogger("grpc._cython.cygrpc").debug("Using AsyncIOEngine.POLLER")
        logging.getLogger("aiohttp.access").info("a library's info still shows")
        lines = out.getvalue().splitlines()
        assert [line.split(" ", 3)[3] for line in lines] == [
            "gateway.test: ours", "libxmtp.xmtp_mls.groups: libxmtp's, chosen by RUST_LOG",
            "aiohttp.access: a library's info still shows"]

    def test_a_level_above_info_quiets_the_libraries_too(self, log: logging.Logger) -> None:
        out = io.StringIO()
        setup_logging("plain", "ERROR", stream=out)
        log.warning("ours, below the level")
        logging.getLogger("aiohttp.server").warning("theirs, below the level")
        assert out.getvalue() == ""
