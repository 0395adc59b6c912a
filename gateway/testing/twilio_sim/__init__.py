"""The Twilio simulator (see ``simulator.py``); ``run`` is ``gateway twilio-sim``."""

from gateway.testing.twilio_sim.cli import run
from gateway.testing.twilio_sim.faults import Fault
from gateway.testing.twilio_sim.records import (
    Callback,
    InboundResult,
    ReceivedText,
    SendAttempt,
    SimMessage,
)
from gateway.testing.twilio_sim.simulator import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    TwilioSimulator,
)

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "Callback",
    "Fault",
    "InboundResult",
    "ReceivedText",
    "SendAttempt",
    "SimMessage",
    "TwilioSimulator",
    "run",
]
