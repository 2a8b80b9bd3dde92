"""The counting service's Prometheus metrics and the middleware that counts every request."""
from __future__ import annotations

import time

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)


class Metrics:
    """Prometheus metrics in a registry of the app's own (several apps can live in one process)."""

    def __init__(self, max_batch: int):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("binventory_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("binventory_http_request_seconds", "HTTP request latency", ["route"],
                                 buckets=(.001, .0025, .005, .01, .02, .03, .05, .075, .1, .25, .5, 1,
                                          2.5, 5, 10), registry=r)
        self.errors = Counter("binventory_errors", "Failed requests by error status code", ["status"],
                              registry=r)
        sizes = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < max_batch} | {max_batch})
        self.batch_size = Histogram("binventory_batch_size", "Images per model call", buckets=sizes,
                                    registry=r)
        self.batch_seconds = Histogram("binventory_batch_seconds", "Model time per batch", registry=r)
        self.queue = Gauge("binventory_queue_depth", "Images waiting for the model", registry=r)
        self.model = Gauge("binventory_model_info", "1 for the model now serving", ["model_version"],
                           registry=r)
        self.swaps = Counter("binventory_model_swaps", "Models swapped in while serving", registry=r)

    def serving(self, model_id: str, before: str | None = None) -> None:
        if before is not None and before != model_id:
            self.model.remove(before)
        self.model.labels(model_id).set(1)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self, queued: int) -> tuple[bytes, str]:
        self.queue.set(queued)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: request bodies stream through untouched)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500  # 500 unless a response starts

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            # The route's template, not the raw path: unknown paths must not grow the label set.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
