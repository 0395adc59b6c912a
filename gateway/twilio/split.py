"""Splitting a long text into messages Twilio accepts (a body is at most 1600 characters).

Length is counted in UTF-16 code units, the way a phone counts: an emoji outside the
Basic Multilingual Plane takes two. That can only make parts shorter than needed, never
too long.
"""

from __future__ import annotations

MAX_BODY = 1600


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_body(text: str, limit: int = MAX_BODY) -> list[str]:
    """Parts of at most ``limit`` units, cut at the last whitespace that fits; a word
    longer than ``limit`` is cut where it must be. The whitespace at each cut is dropped;
    everything else is kept, in order. A text that fits is returned as is."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        fit = _fitting_prefix(rest, limit)
        cut = max(rest.rfind(" ", 0, fit + 1), rest.rfind("\n", 0, fit + 1))
        if cut > 0:
            head, rest = rest[:cut], rest[cut + 1:]
        else:  # one word longer than a whole message
            head, rest = rest[:fit], rest[fit:]
        head = head.rstrip()
        if head:
            parts.append(head)
        rest = rest.lstrip(" \n")
    if rest or not parts:
        parts.append(rest)
    return parts


def _fitting_prefix(text: str, limit: int) -> int:
    """The number of characters of ``text`` that fit in ``limit`` UTF-16 units."""
    units = 0
    for i, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)
