"""docs/api.md's examples run as written: its ``sh`` blocks (the curl session, every
resource) and then its Python client example, in one shell, against a real ``gateway
serve`` on the embedded default config. Docs that drift from the API fail here."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.api.openapi import DOCUMENT
from tests.e2e.served_gateway import ROOT, ServedGateway, served

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "api.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(DOC.read_text()) if lang == language]


def session_script() -> str:
    """The sh blocks, then the python ones fed to the venv's python, in document order,
    each announced so a failure names its block."""
    parts = ["set -euo pipefail"]
    for number, (lang, body) in enumerate(_BLOCK.findall(DOC.read_text()), 1):
        if lang == "sh":
            parts.append(f"echo '>>> block {number}' >&2\n{body}")
        elif lang == "python":
            parts.append(f"echo '>>> block {number}' >&2\npython - <<'PYTHON'\n{body}PYTHON")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.skip(f"docs/api.md's examples use {tool}, which is not installed")
    with served(tmp_path_factory.mktemp("docs")) as running:
        yield running


class TestTheDocsExamplesRun:
    def test_the_curl_session_and_the_python_example_succeed_in_order(
            self, gateway: ServedGateway) -> None:
        # GATEWAY: the docs default it to :8080; the token is read as the docs read it
        done = subprocess.run(  # noqa: S603 - bash with our own docs' script
            ["bash", "-c", session_script()], cwd=gateway.home,  # noqa: S607
            env=gateway.env(GATEWAY=gateway.url), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stdout[-6000:]
        out = done.stdout
        assert '"friendly_name": "Support (EU)"' in out  # the PATCH answered
        assert "event: message.added" in out  # the stream replayed the message
        assert '{"status": "ready"}' in out
        assert "streamed: Hello from the operator" in out  # the Python example's stream
        assert "internal_error" not in gateway.log.read_text()


def _curl_routes(script: str) -> set[tuple[str, str]]:
    """(method, path) of every curl command, the path as written after $GATEWAY."""
    found = set()
    for command in re.split(r"\n(?!\s)", script.replace("\\\n", " ")):
        if "curl " not in command:
            continue
        url = re.search(r'"\$GATEWAY(/[^"?]*)', command)
        assert url is not None, command
        explicit = re.search(r"-X (\w+)", command)
        method = explicit.group(1) if explicit else ("POST" if " -d " in command else "GET")
        found.add((method, url.group(1)))
    return found


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


class TestTheDocsCoverTheApi:
    def test_every_operation_of_the_api_and_the_health_checks_have_a_curl_example(
            self) -> None:
        written = _curl_routes("\n".join(blocks("sh")))
        missing = [
            (method.upper(), template)
            for template, item in DOCUMENT["paths"].items()
            for method in item if method in ("get", "post", "patch", "delete")
            and not any(m == method.upper() and _matches(template, p) for m, p in written)]
        assert missing == []
        assert {("GET", "/healthz"), ("GET", "/readyz")} <= written

    def test_the_python_example_is_one_whole_program(self) -> None:
        (example,) = blocks("python")
        compile(example, str(DOC), "exec")
        assert "asyncio.run(main())" in example


def test_the_examples_read_the_token_where_the_default_config_keeps_it() -> None:
    setup = blocks("sh")[0]
    assert "data/secrets.yaml" in setup
    assert Path(ROOT / "config" / "gateway.yaml").read_text().count("tokens: [generate]") == 1
