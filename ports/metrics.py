"""The metering port: where the application counts runs (the HTTP edge renders them for /metrics)."""

from typing import Protocol

from domain.model import Outcome


class MetricsText(Protocol):
    """The service's metrics, rendered for a scrape."""

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        ...


class RunMeter(Protocol):
    """One language's run counters."""

    in_flight: int  # runs handed to the runtime and not answered yet

    def observe(self, outcome: Outcome, workspace_id: str, function: str) -> None:
        """A run that answered with an outcome (any status)."""
        ...

    def count(self, outcome: str, workspace_id: str, function: str) -> None:
        """A run that raised instead (`unavailable`, `error`)."""
        ...
