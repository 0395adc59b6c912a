"""Prometheus metrics, one registry per app (no module-level state)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.delivery.pacing import Pacer

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

        self.xmtp_rate_limited = Counter(
            "gateway_xmtp_rate_limited",
            "XMTP writes the node refused for the client's rate (429, RESOURCE_EXHAUSTED), "
            "as libxmtp logged them", registry=self.registry)

    def watch_write_budget(self, pacer: Pacer) -> None:
        """Exposes each XMTP identity's write budget (the chat engine's ``pacer``)."""
        self.registry.register(_WriteBudgets(pacer))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _WriteBudgets(Collector):
    """Read at each scrape: what each identity's rolling window holds, its usable size,
    and how many writes had to wait for their turn."""

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "gateway_xmtp_write_budget_used",
            "XMTP writes in the identity's rolling window now", labels=["identity"])
        limit = GaugeMetricFamily(
            "gateway_xmtp_write_budget_limit",
            "XMTP writes the identity may make per rolling window (xmtp.write_budget, less "
            "its headroom)", labels=["identity"])
        delayed = CounterMetricFamily(
            "gateway_xmtp_writes_delayed",
            "XMTP writes that waited for room in the identity's write budget",
            labels=["identity"])
        for identity, budget in sorted(self._pacer.windows().items()):
            used.add_metric([identity], budget.used())
            limit.add_metric([identity], budget.limit)
            delayed.add_metric([identity], budget.delayed)
        yield used
        yield limit
        yield delayed
