"""Free TCP ports on 127.0.0.1, for servers the tests and benches start.

A port is only reserved while a socket holds it, and a server started as a subprocess
binds it later, so two things could take it in between:

- the kernel's own choice for ``bind(("…", 0))`` and for every outgoing connection (the
  libxmtp clients, aiohttp) comes from the ephemeral range; a port picked there can be
  handed to a client socket, or straight back to the next ``free_port()`` call — a CI run
  saw the simulator and the devnode given the same port that way, and the test talked
  HTTP/1 to the devnode's gRPC;
- another ``free_port()`` call in this process, before the first server has bound.

So ports come from below the ephemeral range, where the kernel assigns nothing by
itself, and never twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000
_given: set[int] = set()
# not the random module's shared state, which a test (Hypothesis, a seeded test) may set
_chance = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768  # Linux's default, and above most systems' lowest ephemeral port
    return max(low, _LOWEST + 1_000)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on now, outside the kernel's ephemeral range, and not
    given out before by this process."""
    high = _ephemeral_start()
    for _ in range(1_000):
        port = _chance.randrange(_LOWEST, high)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port between {_LOWEST} and {high} on 127.0.0.1")
