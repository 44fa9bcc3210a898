"""Runs counted on the way through: a Runtime wrapped so that every run reaches its language's meter."""

from collections.abc import Callable, Mapping

from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Workspace
from ports.metrics import RunMeter
from ports.runtime import Runtime

# Runs the runtime could not take, or that broke on our side, next to the Status values.
UNAVAILABLE, ERROR = "unavailable", "error"


class MeteredRuntime:
    """A Runtime whose runs are counted; everything else goes to `inner` (the runtime itself)."""

    def __init__(self, inner: Runtime, meter: RunMeter) -> None:
        self.inner = inner
        self.language = inner.language
        self.meter = meter

    async def start(self) -> None:
        await self.inner.start()

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        return await self.inner.prepare(workspace)

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        meter = self.meter
        meter.in_flight += 1
        try:
            outcome = await self.inner.run(workspace, function, params)
        except Unavailable:
            meter.count(UNAVAILABLE, workspace.id, function)
            raise
        except Exception:
            meter.count(ERROR, workspace.id, function)
            raise
        finally:
            meter.in_flight -= 1
        meter.observe(outcome, workspace.id, function)
        return outcome

    async def evict(self, workspace_id: str) -> None:
        await self.inner.evict(workspace_id)

    def health(self) -> Mapping[str, Json]:
        return self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


def metered(
    runtimes: Mapping[Language, Runtime], meter_for: Callable[[Runtime], RunMeter]
) -> dict[Language, Runtime]:
    """The runtimes, each wrapped so its runs are counted (the container wires this in)."""
    return {language: MeteredRuntime(runtime, meter_for(runtime)) for language, runtime in runtimes.items()}


def unwrapped(runtime: Runtime) -> Runtime:
    """The runtime itself, under its meter (tests and operators' tools ask it for pids and such)."""
    return runtime.inner if isinstance(runtime, MeteredRuntime) else runtime
