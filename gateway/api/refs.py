"""What a conversation reference looks like. A route's ``{ref}`` is a conversation id or,
failing that, a unique name (as Twilio resolves both), so a unique name must never have
an id's shape: it would shadow, or be shadowed by, the conversation with that id."""

from __future__ import annotations

import re

# Ids we mint (gateway.domain.ids): "CH" and 32 lowercase hex digits.
_CONVERSATION_ID = re.compile(r"CH[0-9a-f]{32}")
# Names refused for looking like one; any case, since a reader cannot tell them apart.
_ID_LOOKALIKE = re.compile(r"CH[0-9a-f]{32}", re.IGNORECASE)


def is_conversation_id(ref: str) -> bool:
    return _CONVERSATION_ID.fullmatch(ref) is not None


def looks_like_conversation_id(name: str) -> bool:
    return _ID_LOOKALIKE.fullmatch(name.strip()) is not None


# The route segment of a conversation reference: anything but "/". aiohttp's default
# ([^{}/]+) would make a unique name holding "{" or "}" impossible to fetch.
REF = "{ref:[^/]+}"
