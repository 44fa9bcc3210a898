"""Prometheus metrics: counted on the way through (runs, requests), read from the runtimes when scraped.

Each service has a registry of its own, so two services in one process (tests, embedders) never mix
their figures. Labelled children are looked up once and kept: `.labels()` costs more than `.inc()`.
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from domain.model import Json, Language, Outcome
from ports.runtime import Runtime

CONTENT_TYPE = CONTENT_TYPE_LATEST
# A warm run takes well under a millisecond; the default run timeout is 20 s.
RUN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 60)
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)


class RunMeter:
    """One language's run counters (ports.metrics.RunMeter), with its labelled children cached."""

    def __init__(self, metrics: "Metrics", language: Language) -> None:
        self.language = language.value
        self.in_flight = 0  # the event loop is single-threaded: a plain int needs no lock
        self._metrics = metrics
        self._duration = metrics.run_duration.labels(self.language)
        self._cold = metrics.cold_starts.labels(self.language)
        self._runs: dict[Any, Any] = {}

    def observe(self, outcome: Outcome, workspace_id: str, function: str) -> None:
        self.count(outcome.status.value, workspace_id, function)
        self._duration.observe(outcome.duration_ms / 1000)
        if outcome.cold:
            self._cold.inc()

    def count(self, outcome: str, workspace_id: str, function: str) -> None:
        labelled = self._metrics.workspace_labels
        key = (outcome, workspace_id, function) if labelled else outcome
        child = self._runs.get(key)
        if child is None:
            labels = (
                (self.language, outcome, workspace_id, function) if labelled else (self.language, outcome)
            )
            child = self._runs[key] = self._metrics.runs.labels(*labels)
        child.inc()


class Metrics:
    """The service's metrics and the registry that /metrics renders."""

    def __init__(self, workspace_labels: bool = True) -> None:
        # `_created` series double the output and no dashboard reads them. (The function is untyped.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.workspace_labels = workspace_labels
        self.meters: dict[Language, tuple[RunMeter, Runtime]] = {}
        self.install_stats: Callable[[], Mapping[str, int]] | None = None
        self.ready: Callable[[], bool] = lambda: False
        registry = self.registry
        by_function = ("workspace", "function") if workspace_labels else ()
        self.runs = Counter(
            "functions_runs",
            "Runs by language and outcome (and by workspace and function unless METRICS_WORKSPACE_LABELS=no)",
            ("language", "outcome", *by_function),
            registry=registry,
        )
        self.run_duration = Histogram(
            "functions_run_duration_seconds",
            "How long functions ran",
            ("language",),
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.cold_starts = Counter(
            "functions_cold_starts", "Runs that started a new worker", ("language",), registry=registry
        )
        self.requests = Counter(
            "functions_http_requests",
            "HTTP requests by route and status",
            ("route", "status"),
            registry=registry,
        )
        self.request_size = Histogram(
            "functions_http_request_size_bytes",
            "Request body sizes by route",
            ("route",),
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        registry.register(_ScrapeTime(self))
        ProcessCollector(registry=registry)

    def meter(self, runtime: Runtime) -> RunMeter:
        """The run counters of `runtime`'s language (its health is read when /metrics is scraped)."""
        meter = RunMeter(self, runtime.language)
        self.meters[runtime.language] = (meter, runtime)
        return meter

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTime:
    """What is read when /metrics is scraped rather than counted on the hot path."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration, and no runtime to ask before start-up

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        ready = GaugeMetricFamily(
            "functions_ready", "1 while the service takes runs (not starting or stopping)"
        )
        ready.add_metric([], 1.0 if metrics.ready() else 0.0)
        yield ready
        yield from _runtime_families(metrics.meters)
        if metrics.install_stats is not None:
            installs = CounterMetricFamily(
                "functions_dependency_installs", "Dependency installs by outcome", labels=("outcome",)
            )
            for outcome, count in sorted(metrics.install_stats().items()):
                installs.add_metric([outcome], count)
            yield installs


def _runtime_families(meters: Mapping[Language, tuple[RunMeter, Runtime]]) -> Iterator[Metric]:
    labels = ("language",)
    up = GaugeMetricFamily("functions_runtime_up", "1 when the runtime's host is ready", labels=labels)
    workers = GaugeMetricFamily("functions_workers", "Live workers (or interpreters)", labels=labels)
    queue = GaugeMetricFamily(
        "functions_run_queue_depth", "Runs handed to the runtime and not answered yet", labels=labels
    )
    restarts = CounterMetricFamily(
        "functions_host_restarts", "Restarts of a dead runtime host", labels=labels
    )
    for language, (meter, runtime) in sorted(meters.items()):
        health = runtime.health()
        up.add_metric([language.value], 1.0 if health.get("status") == "ok" else 0.0)
        workers.add_metric([language.value], _number(health.get("workers")))
        queue.add_metric([language.value], meter.in_flight)
        restarts.add_metric([language.value], _number(health.get("restarts")))
    yield from (up, workers, queue, restarts)


def _number(value: Json) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
