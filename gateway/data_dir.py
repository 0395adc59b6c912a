"""One process at a time owns a data directory: it holds libxmtp's database, the
embedded devnode's and usually SQLite's, none of which two gateways may share. (Several
processes sharing one *store*, PostgreSQL say, each have their own data directory; they
elect one XMTP stream consumer through ``gateway.store.leader``.)

The claim is an ``flock`` on ``<data_dir>/gateway.lock``, so the kernel drops it when
the process ends in any way, SIGKILL included: a crashed gateway leaves no stale lock.
The file holds the owner's pid, to name it to the next process that tries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from gateway.errors import DataDirInUse

LOCK_FILE = "gateway.lock"


@contextlib.contextmanager
def exclusive_data_dir(data_dir: Path) -> Iterator[None]:
    """Owns ``data_dir`` for the block; raises DataDirInUse at once if another process
    (or another claim in this one) owns it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: a child process must not inherit, and so keep, the claim
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(str(data_dir), _owner(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _owner(fd: int) -> int | None:
    """The owner's pid, or None when it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
