"""Shipped test doubles: the Twilio simulator (also ``gateway twilio-sim``) and recording
fakes."""

from gateway.testing.twilio_sim import Fault, InboundResult, ReceivedText, TwilioSimulator

__all__ = ["Fault", "InboundResult", "ReceivedText", "TwilioSimulator"]
