"""Prometheus metrics, one registry per app (no module-level state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.inbound = Counter(
            "gateway_inbound_messages", "Inbound messages by channel and outcome",
            ["channel", "outcome"], registry=self.registry)
        self.webhook_rejected = Counter(
            "gateway_webhook_rejected", "Webhooks refused before recording, by reason",
            ["endpoint", "reason"], registry=self.registry)
        self.deliveries = Counter(
            "gateway_deliveries", "Delivery state changes by channel and state",
            ["channel", "state"], registry=self.registry)
        self.outbox_depth = Gauge(
            "gateway_outbox_depth", "Deliveries waiting to be sent, by channel",
            ["channel"], registry=self.registry)
        self.handler_latency = Histogram(
            "gateway_handler_seconds", "Webhook handler latency", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.delivery_latency = Histogram(
            "gateway_delivery_seconds", "From a message's recording to its send, by channel",
            ["channel"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.stream_failures = Counter(
            "gateway_chat_stream_failures", "XMTP stream failures (each followed by a retry)",
            registry=self.registry)
        self.worker_errors = Counter(
            "gateway_worker_errors", "Unexpected errors in background workers, by worker",
            ["worker"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
