"""Containers for tests of the operations interfaces: the real wiring, a fake runtime, memory storage."""

from collections.abc import Mapping

from attrs import evolve
from dependency_injector import providers

from adapters.storage.memory import InMemoryStore
from domain.model import Json, Language, LogEntry, Outcome, Workspace
from entrypoints.container import Container, build_container
from tests.fakes import PROGRAMS, Program, ScriptedRuntime


async def shout(params: Mapping[str, Json]) -> Json:
    return str(params.get("word", "")).upper()


def scripted(**programs: Program) -> ScriptedRuntime:
    return ScriptedRuntime(programs={**PROGRAMS, "shout": shout, **programs}, timeout_s=5.0)


class ChattyRuntime:
    """A scripted runtime whose runs print a line and report a cold worker, as a real host would."""

    def __init__(self, inner: ScriptedRuntime) -> None:
        self.inner = inner
        self.language = inner.language

    async def start(self) -> None:
        await self.inner.start()

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        return await self.inner.prepare(workspace)

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        outcome = await self.inner.run(workspace, function, params)
        said = LogEntry("log", f"user says {function}", "2026-01-01T00:00:00.000Z")
        return evolve(outcome, logs=[said], cold=True, duration_ms=1.5)

    async def evict(self, workspace_id: str) -> None:
        await self.inner.evict(workspace_id)

    def health(self) -> Mapping[str, Json]:
        return {**self.inner.health(), "workers": 3, "restarts": 2}

    async def aclose(self) -> None:
        await self.inner.aclose()


def container_with(runtime: ScriptedRuntime | ChattyRuntime, **environ: str) -> Container:
    container = build_container(environ)
    container.store.override(providers.Object(InMemoryStore()))
    container.runtimes.override(providers.Dict({Language.NODEJS: providers.Object(runtime)}))
    return container


def body(**functions: str) -> dict[str, Json]:
    return {"functions": {name: {"code": code} for name, code in functions.items()}}
