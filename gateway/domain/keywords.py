"""Compliance keywords a phone may send: STOP-family, START-family, HELP-family.

The families are Twilio's defaults for long codes, so what we do matches what Twilio
does at its edge (it blocks sends to a number that replied STOP, error 21610): a text
is a keyword only when the whole message, trimmed and case-folded, is one of them.
"Stop texting me about it" is an ordinary message.
"""

from __future__ import annotations

import enum

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
                        "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

# Trailing punctuation people add ("Stop." "STOP!"). Dropping it errs towards honouring
# an opt-out, the safe side.
_TRAILING = ".!"


class Keyword(enum.StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


def classify(body: str | None) -> Keyword | None:
    if not body:
        return None
    word = body.strip().rstrip(_TRAILING).strip().upper()
    if word in STOP_WORDS:
        return Keyword.STOP
    if word in START_WORDS:
        return Keyword.START
    if word in HELP_WORDS:
        return Keyword.HELP
    return None
