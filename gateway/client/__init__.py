"""An async Python client for the gateway's Conversations API and event stream."""

from gateway.client.client import Conversations, GatewayClient
from gateway.client.http import ApiResponseError
from gateway.client.paging import Page, Paginator
from gateway.client.resources import Conversation, Event, Message, Participant, Receipt
from gateway.client.stream import EventStream, StreamFailed, StreamOptions

__all__ = [
    "ApiResponseError", "Conversation", "Conversations", "Event", "EventStream",
    "GatewayClient", "Message", "Page", "Paginator", "Participant", "Receipt",
    "StreamFailed", "StreamOptions",
]
