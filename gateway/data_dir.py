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
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import DataDirInUse

LOCK_FILE = "gateway.lock"


@contextlib.contextmanager
def exclusive_data_dir(data_dir: Path) -> Iterator[None]:
    """Owns ``data_dir`` for the block; raises DataDirInUse at once if another process
    (or another claim in this one) owns it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = claim(data_dir / LOCK_FILE)
    if isinstance(fd, Held):
        raise DataDirInUse(str(data_dir), fd.pid)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def check_unclaimed(data_dir: Path) -> None:
    """Raises DataDirInUse when another process owns ``data_dir``, creating nothing: a
    directory or lock file that does not exist is nobody's. ``serve`` asks this before
    it binds its port, and claims the directory (creating it) only once it has."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the close below
    except BlockingIOError:
        raise DataDirInUse(str(data_dir), _owner(fd)) from None
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Held:
    """The lock file is claimed by another process: ``pid`` when it wrote its own."""

    pid: int | None


def claim(lock_file: Path) -> int | Held:
    """An open descriptor holding an exclusive ``flock`` on ``lock_file``, with this
    process's pid written in it (closing the descriptor releases the claim); ``Held``
    when another process (or another claim in this one) holds it."""
    # O_CLOEXEC: a child process must not inherit, and so keep, the claim
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held = Held(_owner(fd))
        os.close(fd)
        return held
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _owner(fd: int) -> int | None:
    """The owner's pid, or None when it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
