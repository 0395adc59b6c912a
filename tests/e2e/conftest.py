"""Fixtures for end-to-end tests with real libxmtp clients on a loopback devnode."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.xmtp.client import XmtpClient
from gateway.xmtp.devnode import DevNode

# libxmtp logs every step at INFO to stdout; errors are enough in test output
os.environ.setdefault("RUST_LOG", "error")

MakeClient = Callable[..., Awaitable[XmtpClient]]


@pytest.fixture
async def devnode() -> AsyncIterator[DevNode]:
    async with DevNode.start(db=":memory:") as node:
        yield node


@pytest.fixture
def make_client(devnode: DevNode) -> MakeClient:
    """``await make_client()`` registers a fresh wallet (in-memory libxmtp database);
    pass ``private_key=`` / ``db_path=`` / ``encryption_key=`` to reuse one."""

    async def make(*, private_key: bytes | None = None, db_path: str | None = None,
                   encryption_key: bytes | None = None, node_url: str | None = None,
                   ) -> XmtpClient:
        return await XmtpClient.create(
            node_url=node_url or devnode.url,
            private_key=private_key or secrets.token_bytes(32),
            db_path=db_path, encryption_key=encryption_key)

    return make
