"""What XMTP's node counts as a client's writes, and how it words a refusal: plain
functions the chat channel and ``gateway.xmtp.budget`` share (no imports, so the
delivery package can use them without importing libxmtp's side)."""

from __future__ import annotations

# How the node and libxmtp word a rate-limit refusal: the status's name in gRPC and in
# tonic's Debug form, and xmtp-node-go's message
REFUSAL_MARKS = ("RESOURCE_EXHAUSTED", "ResourceExhausted", "exceeds rate limit")


def group_writes(members: int) -> int:
    """A group made with ``members`` wallets, or that many added to one: the commit and
    a welcome each (xmtp-node-go counts one per message in a publishing request; a
    wallet with several installations is welcomed several times, which the budget's
    headroom absorbs)."""
    return 1 + members


def is_refusal(text: str) -> bool:
    """Whether an error's or a log line's text is the node refusing a client's rate."""
    return any(mark in text for mark in REFUSAL_MARKS)
