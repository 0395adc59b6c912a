"""What XMTP knows of an inbox's installations, and the caps XMTP's network puts on them.

Every libxmtp database is an installation of its wallet's inbox. An inbox may have at
most ``MAX_INSTALLATIONS`` active at once (libxmtp refuses to register another), and its
identity log at most ``MAX_INBOX_UPDATES`` updates in its whole life (the node refuses
more: "inbox log is full"); creating the inbox, and adding or revoking an installation
(libxmtp revokes any number in one update), each take one. A full log cannot be undone:
the inbox must be replaced by another (another wallet key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_INSTALLATIONS = 10
MAX_INBOX_UPDATES = 256
WARN_INSTALLATIONS_FROM = 8  # a gateway with this many in use says so loudly at start
WARN_UPDATES_LEFT = 16


@dataclass(frozen=True, slots=True)
class Installation:
    id: str  # hex
    created_ns: int | None  # the client's clock when it registered, as libxmtp keeps it

    @property
    def created(self) -> str:
        if self.created_ns is None:
            return "unknown"
        return datetime.fromtimestamp(self.created_ns / 1e9, UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class InboxState:
    inbox_id: str
    recovery_address: str | None  # lowercase; the wallet that may revoke installations
    installations: tuple[Installation, ...]  # active ones, oldest first
    updates_used: int | None = None  # None: not counted

    @property
    def in_use(self) -> int:
        return len(self.installations)

    @property
    def updates_left(self) -> int | None:
        if self.updates_used is None:
            return None
        return max(MAX_INBOX_UPDATES - self.updates_used, 0)

    def has(self, installation_id: str) -> bool:
        return any(i.id == installation_id for i in self.installations)


def state_from_ffi(ffi_state: Any, updates_used: int | None = None) -> InboxState:
    """libxmtp's ``FfiInboxState`` as an ``InboxState``."""
    installations = sorted(
        (Installation(bytes(i.id).hex(), i.client_timestamp_ns)
         for i in ffi_state.installations),
        key=lambda i: (i.created_ns is None, i.created_ns or 0, i.id))
    recovery = ffi_state.recovery_identity
    return InboxState(
        inbox_id=str(ffi_state.inbox_id),
        recovery_address=str(recovery.identifier).lower() if recovery is not None else None,
        installations=tuple(installations), updates_used=updates_used)
