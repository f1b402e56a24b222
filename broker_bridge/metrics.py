"""The bridge's Prometheus metrics (SPEC §3 names; dashboards depend on them).

One private registry per bridge, so tests can run several bridges in one process and
nothing else in the process leaks into /metrics.
"""

from __future__ import annotations

import re

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# Buckets around the benchmark's target (p99 ≤ 250 ms) and the default 10 s timeout.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_EVENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_EVENT_NAMES = 64  # a device cannot blow up the label set with invented event names
DEADLETTER_REASONS = ("too_large", "bad_utf8", "bad_json", "bad_schema", "bad_field",
                      "device_mismatch", "bad_topic", "unprocessable")
INTERNAL_ERROR_PLACES = ("worker", "message")


class BridgeMetrics:
    """Counters, gauges and the latency histogram, all on `self.registry`."""

    def __init__(self) -> None:
        # No `_created` series: they double the exposition and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "hcp_bridge_ratings_received", "Rating messages received from the broker "
            "(including redeliveries and invalid ones)", registry=r)
        self.forwarded = Counter(
            "hcp_bridge_ratings_forwarded", "Ratings the platform answered for "
            "(accepted, duplicate or rejected)", registry=r)
        self.accepted = Counter(
            "hcp_bridge_ratings_accepted", "Ratings the platform accepted as new", registry=r)
        self.duplicate = Counter(
            "hcp_bridge_ratings_duplicate", "Ratings seen again: answered duplicate by the "
            "platform, or answered from the bridge's cache of recent results", registry=r)
        self.rejected = Counter(
            "hcp_bridge_ratings_rejected", "Ratings the platform rejected", registry=r)
        self.deadletter = Counter(
            "hcp_bridge_deadletter", "Invalid messages sent to the dead-letter topic",
            ["reason"], registry=r)
        self.retries = Counter(
            "hcp_bridge_platform_retries", "Platform requests retried (errors, timeouts, "
            "5xx, 429, refused batches)", registry=r)
        self.client_errors = Counter(
            "hcp_bridge_platform_client_errors", "Whole batches refused with a "
            "non-retryable 4xx (bad token, wrong URL): a configuration problem",
            ["status"], registry=r)
        self.inflight = Gauge(
            "hcp_bridge_inflight", "Ratings received and not yet answered by the platform "
            "(held un-acknowledged at the broker)", registry=r)
        self.request_seconds = Histogram(
            "hcp_bridge_platform_request_seconds", "Platform request duration, every attempt",
            buckets=LATENCY_BUCKETS, registry=r)
        self.devices_online = Gauge(
            "hcp_bridge_devices_online", "Devices whose retained status says online",
            registry=r)
        self.devices_backlog = Gauge(
            "hcp_bridge_devices_backlog", "Sum of the ratings waiting on devices, from their "
            "last telemetry", registry=r)
        self.device_events = Counter(
            "hcp_bridge_device_events", "Device events by name", ["event"], registry=r)
        self.internal_errors = Counter(
            "hcp_bridge_internal_errors", "Unexpected failures contained by the bridge "
            "(a bug, or input no check foresaw): in a platform worker, or handling a "
            "message", ["where"], registry=r)
        self.broker_connected = Gauge(
            "hcp_bridge_broker_connected", "1 while connected with subscriptions granted",
            registry=r)
        self._event_names: set[str] = set()
        for reason in DEADLETTER_REASONS:  # every series exists from the start, at 0
            self.deadletter.labels(reason)
        for place in INTERNAL_ERROR_PLACES:
            self.internal_errors.labels(place)

    def count_event(self, name: object) -> None:
        label = name if isinstance(name, str) and _EVENT_NAME_RE.match(name) else "invalid"
        if label not in self._event_names:
            if len(self._event_names) >= MAX_EVENT_NAMES:
                label = "other"
            self._event_names.add(label)
        self.device_events.labels(label).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
