"""`gateway check-config PATH`."""

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import load_config
from gateway.config.report import check
from tests.unit.config_fixtures import minimal

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, raw: object) -> Path:
    file = tmp_path / "gw.yaml"
    file.write_text(yaml.safe_dump(raw))
    return file


class TestCheckConfig:
    def test_a_valid_config_prints_its_rules_and_exits_0(self, tmp_path: Path) -> None:
        out = io.StringIO()
        assert check(write(tmp_path, minimal()), out) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["RULE", "PROXY", "CHANNELS", "MODE", "WALLETS", "ALLOW",
                                    "DENY", "OUTBOUND"]
        assert lines[1].split()[:5] == ["support", "+15550100001", "sms", "fixed", "alice,"]
        assert lines[2].split()[:4] == ["dial", "+15550100002", "sms", "dial"]
        assert "OK (2 rule(s))" in lines[-1]

    def test_every_problem_is_printed_and_the_exit_status_is_1(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["proxy"] = "5550100001"
        raw["rules"][1]["wallets"] = ["alice"]
        raw["twilio"]["auth_token"] = "changeme"
        out = io.StringIO()
        assert check(write(tmp_path, raw), out) == 1
        text = out.getvalue()
        assert "3 problem(s)" in text
        assert "  rules[0].proxy: not an E.164 number (no leading '+')" in text
        assert "  rules[1].wallets: a dial rule has no wallets" in text
        assert "  twilio.auth_token: placeholder value" in text
        # no rules table: read from an invalid config it could show what will not run
        assert text.splitlines()[0] == f"{tmp_path / 'gw.yaml'}: 3 problem(s)"
        assert "RULE" not in text

    def test_problems_come_in_the_order_of_the_file(self, tmp_path: Path) -> None:
        file = tmp_path / "gw.yaml"
        text = yaml.safe_dump(minimal(), sort_keys=False)  # database, twilio, ..., rules
        file.write_text(text.replace("active_key: k1", "active_key: k9")
                        .replace("- name: dial", "- name: Dial")
                        .replace("env: local", "env: nowhere"))
        out = io.StringIO()
        assert check(file, out) == 1
        keys = [line.split(":")[0].strip() for line in out.getvalue().splitlines()[1:]]
        assert keys == ["database", "xmtp.env", "rules[1].name"]

    def test_an_unquoted_phone_number_is_shown_as_written_with_a_call_to_quote_it(
            self, tmp_path: Path) -> None:
        file = tmp_path / "gw.yaml"
        text = yaml.safe_dump(minimal(), sort_keys=False)
        file.write_text(text.replace("proxy: '+15550100002'", "proxy: +15550100002")
                        .replace("name: support", "name: support\n  allow: {prefixes: [+44]}"))
        out = io.StringIO()
        assert check(file, out) == 1
        assert out.getvalue().splitlines()[1:] == [
            '  rules[0].allow.prefixes[0]: +44 is read by YAML as a number: quote it, "+44"',
            '  rules[1].proxy: +15550100002 is read by YAML as a number: quote it, '
            '"+15550100002"']

    def test_a_yaml_syntax_error_names_the_file_and_the_place(self, tmp_path: Path) -> None:
        file = tmp_path / "gw.yaml"
        file.write_text("server:\n  port: [8080\nrules: []\n")
        out = io.StringIO()
        assert check(file, out) == 1
        assert out.getvalue().splitlines() == [
            f"{file}: 1 problem(s)",
            f"  {file}, line 3, column 6: not valid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence)"]

    def test_notes_do_not_fail_the_check(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["channels"] = ["whatsapp"]
        out = io.StringIO()
        assert check(write(tmp_path, raw), out) == 0
        assert "note: rules[0] (support): no outbound.whatsapp_template" in out.getvalue()

    def test_checking_writes_no_secrets(self, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        out = io.StringIO()
        assert check(REPO / "config" / "gateway.yaml", out) == 0
        assert not (tmp_path / "data").exists()
        assert "  demo: (generated on first start)\n" in out.getvalue()

    def test_a_demo_key_made_up_for_the_check_is_not_shown_as_an_address(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        outputs = []
        for _ in range(2):
            out = io.StringIO()
            assert check(REPO / "config" / "gateway.example.yaml", out) == 0
            outputs.append(out.getvalue())
        assert outputs[0] == outputs[1]  # no random address that changes each time
        assert "  demo: (generated on first start)\n" in outputs[0]
        assert "  alice: 0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B\n" in outputs[0]

    def test_a_demo_key_already_made_is_shown_as_its_address(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
        example = REPO / "config" / "gateway.example.yaml"
        started = load_config(example)  # what the first start does: keeps the key
        assert started.demo is not None
        out = io.StringIO()
        assert check(example, out) == 0
        assert f"  demo: {started.demo.wallet_address}\n" in out.getvalue()

    def test_a_demo_key_given_in_the_config_is_shown_as_its_address(
            self, tmp_path: Path) -> None:
        raw = minimal()
        raw["demo"] = {"wallet_key": "0x" + "33" * 32}
        raw["rules"][0]["wallets"] = ["demo"]
        file = write(tmp_path, raw)
        out = io.StringIO()
        assert check(file, out) == 0
        config = load_config(file, persist_secrets=False)
        assert config.demo is not None
        assert f"  demo: {config.demo.wallet_address}\n" in out.getvalue()

    def test_an_unreadable_file_is_a_problem(self, tmp_path: Path) -> None:
        out = io.StringIO()
        assert check(tmp_path / "missing.yaml", out) == 1
        assert "cannot read" in out.getvalue()


    def test_a_file_that_is_not_utf8_is_one_problem(self, tmp_path: Path) -> None:
        file = tmp_path / "gw.yaml"
        file.write_bytes(b"\x00\xff\xfe")
        out = io.StringIO()
        assert check(file, out) == 1
        assert out.getvalue().splitlines() == [
            f"{file}: 1 problem(s)",
            f"  cannot read {file}: not UTF-8 (byte 0xff at offset 1)"]


class TestTheCommand:
    def test_dispatches_through_the_cli(self, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["check-config", str(write(tmp_path, minimal()))]) == 0
        assert "support" in capsys.readouterr().out

    def test_runs_as_a_process_with_exit_status_1_on_problems(self, tmp_path: Path) -> None:
        raw = minimal()
        raw["rules"][0]["mode"] = "broadcast"
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "check-config", str(write(tmp_path, raw))],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
        assert done.returncode == 1
        assert "rules[0].mode:" in done.stdout

    def test_a_file_that_is_not_utf8_exits_1_without_a_traceback(self, tmp_path: Path) -> None:
        file = tmp_path / "gw.yaml"
        file.write_bytes("rules: caf\u00e9\n".encode("latin-1"))
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway", "check-config", str(file)],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
        assert (done.returncode, done.stderr) == (1, "")
        assert "not UTF-8 (byte 0xe9 at offset 10)" in done.stdout
