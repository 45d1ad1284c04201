"""Prometheus metrics, one registry per app so that several gateways can share a process (demo, tests).

Under ``epix serve --workers N`` each worker counts in prometheus_client's multiprocess files
(the supervisor sets PROMETHEUS_MULTIPROC_DIR before the worker imports prometheus_client), and
whichever worker is scraped answers with the sum over all of them, workers started again included.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.logs import worker_index

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode


class Metrics:
    def __init__(self, party: str) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "epix_permits_submitted", "Permits accepted from the local MA system", ["action"], registry=self.registry
        )
        self.rejected = Counter(
            "epix_requests_rejected", "Requests refused, by error code", ["code"], registry=self.registry
        )
        self.deliveries = Counter(
            "epix_delivery_attempts", "Delivery attempts by outcome", ["outcome"], registry=self.registry
        )
        self.inbound = Counter(
            "epix_inbound_messages", "Messages received from partners, by outcome", ["outcome"], registry=self.registry
        )
        self.task_crashes = Counter(
            "epix_background_task_crashes",
            "Background loops (delivery, feed, checks, ...) that failed and were started again",
            ["task"],
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "epix_submit_to_receipt_seconds",
            "Time from acceptance to a valid signed receipt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )

    def count_crash(self, task: str, error: BaseException) -> None:
        self.task_crashes.labels(task).inc()

    def render(self) -> bytes:
        if worker_index() is not None and os.environ.get(METRICS_ENV):
            every_worker = CollectorRegistry()
            MultiProcessCollector(every_worker)
            return generate_latest(every_worker)
        return generate_latest(self.registry)
