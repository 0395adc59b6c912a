"""Installations, managed: the gateway never registers one by accident, never an 11th,
and says so early when its inbox nears a cap.

Every libxmtp database is an installation of the gateway's inbox, and XMTP counts them
(see ``inbox_state``). The gateway records the installation it registers in
``<data_dir>/xmtp-installation.json`` (ids only, no secret). A start whose libxmtp
database is missing or new, while that record names an installation the network still
counts as active, is refused (``InstallationLost``) unless the operator asked for a new
installation (``serve --new-installation``). A record kept elsewhere than libxmtp's
database survives the loss of it; a data directory from before the record existed gets
one on its next start.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import (
    ChatNetworkError,
    InstallationLimitReached,
    InstallationLost,
)
from gateway.xmtp.api import inbox_state_of
from gateway.xmtp.client import PendingInstallation, XmtpClient
from gateway.xmtp.inbox_state import (
    MAX_INSTALLATIONS,
    WARN_INSTALLATIONS_FROM,
    WARN_UPDATES_LEFT,
    InboxState,
)

log = logging.getLogger(__name__)

RECORD_NAME = "xmtp-installation.json"


@dataclass(frozen=True, slots=True)
class RecordedInstallation:
    inbox_id: str
    installation_id: str
    wallet: str
    network: str  # the node, or the gateway host, it was registered on
    recorded_at: str  # ISO 8601, UTC


class InstallationRecord:
    """``<data_dir>/xmtp-installation.json``: the installation this data directory has."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> InstallationRecord:
        return cls(data_dir / RECORD_NAME)

    def read(self) -> RecordedInstallation | None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return RecordedInstallation(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise ChatNetworkError(
                f"cannot read {self.path}: {exc}; it records this data_dir's XMTP "
                "installation (see 'gateway xmtp status'): fix or delete it") from exc

    def write(self, client: XmtpClient, network: str) -> RecordedInstallation:
        recorded = RecordedInstallation(
            inbox_id=client.inbox_id, installation_id=client.installation_id,
            wallet=client.address, network=network,
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(self.path.name + ".tmp")
        scratch.write_text(json.dumps(asdict(recorded), indent=2) + "\n", encoding="utf-8")
        os.replace(scratch, self.path)
        return recorded


class InstallationGuard:
    """Passed to ``XmtpClient.create`` as ``before_registering``: refuses a new
    installation that would be an accident or beyond the cap, and warns near the cap."""

    def __init__(self, record: InstallationRecord | None, db_path: Path | None, *,
                 allow_new: bool) -> None:
        self._record = record
        self._db_path = db_path
        self._allow_new = allow_new

    async def __call__(self, pending: PendingInstallation) -> None:
        if pending.new_inbox:
            log.info("XMTP: registering a new inbox %s", pending.inbox_id)
            return
        state = await inbox_state_of(pending.api, pending.inbox_id)
        self._check_record(pending, state)
        if state.in_use >= MAX_INSTALLATIONS:
            raise InstallationLimitReached(pending.inbox_id, state.in_use, MAX_INSTALLATIONS)
        log.warning("XMTP: registering a new installation of inbox %s: %d of %d in use "
                    "after it", pending.inbox_id, state.in_use + 1, MAX_INSTALLATIONS)
        warn_if_near_caps(state, adding=1)

    def _check_record(self, pending: PendingInstallation, state: InboxState) -> None:
        recorded = self._record.read() if self._record is not None else None
        if recorded is None or recorded.inbox_id != pending.inbox_id:
            return
        if recorded.installation_id == pending.installation_id:
            return
        if self._allow_new:
            log.warning("XMTP: --new-installation: registering a new installation instead "
                        "of %s, which stays active until revoked (gateway xmtp revoke)",
                        recorded.installation_id)
            return
        if not state.has(recorded.installation_id):
            log.info("XMTP: the installation this data_dir registered before (%s) is no "
                     "longer active; registering a new one", recorded.installation_id)
            return
        raise InstallationLost(recorded.installation_id, recorded.inbox_id,
                               str(self._db_path) if self._db_path else "(in memory)")


def warn_if_near_caps(state: InboxState, *, adding: int = 0) -> None:
    """Loud log lines when the inbox nears either of XMTP's caps."""
    in_use = state.in_use + adding
    if in_use >= WARN_INSTALLATIONS_FROM:
        log.warning("XMTP inbox %s has %d of its %d installations in use; at %d no new one "
                    "can be registered: revoke unused ones (gateway xmtp status, gateway "
                    "xmtp revoke)", state.inbox_id, in_use, MAX_INSTALLATIONS,
                    MAX_INSTALLATIONS)
    left = state.updates_left
    if left is not None and left - adding <= WARN_UPDATES_LEFT:
        log.warning("XMTP inbox %s has %d identity updates left in its life; at 0 it can no "
                    "longer add or revoke an installation and must be replaced",
                    state.inbox_id, max(left - adding, 0))
