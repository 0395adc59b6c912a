"""``gateway serve`` as a new user runs it: a process on the embedded default config,
copied into a directory of its own (``config/gateway.yaml`` there, so the config's
``../data`` is that directory's ``data/``) with a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTS_WITHIN = 90.0
BIN = Path(sys.executable).parent  # the venv's bin, with the `gateway` command


@dataclass
class ServedGateway:
    home: Path  # a stand-in for the repository's directory: config/ and data/
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.home / "config" / "gateway.yaml"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def token(self) -> str:
        for line in (self.data_dir / "secrets.yaml").read_text().splitlines():
            if line.startswith("api.tokens[0]: "):
                return line.split(": ", 1)[1]
        raise AssertionError("no api token in secrets.yaml")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a user's shell in ``home``, the venv's commands first."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "RUST_LOG": "off",
                "PYTHONUNBUFFERED": "1", **extra}


def copy_default_config(home: Path, port: int) -> None:
    (home / "config").mkdir(parents=True)
    text = (ROOT / "config" / "gateway.yaml").read_text()
    assert "port: 8080" in text  # the public URL follows the port (it is not set)
    (home / "config" / "gateway.yaml").write_text(text.replace("port: 8080", f"port: {port}"))


@contextlib.contextmanager
def served(home: Path) -> Iterator[ServedGateway]:
    """The gateway running in ``home`` until the block ends; up once it says it listens."""
    gateway = ServedGateway(home, free_port(), home / "serve.log")
    copy_default_config(home, gateway.port)
    with gateway.log.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"], cwd=home, env=gateway.env(),
            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + STARTS_WITHIN
        while "gateway listening" not in gateway.log.read_text():
            assert proc.poll() is None, gateway.log.read_text()
            assert time.monotonic() < deadline, gateway.log.read_text()
            time.sleep(0.05)
        yield gateway
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
