"""Test doubles for the ports. They record what happened, for tests to assert on."""

from collections.abc import Awaitable, Callable, Mapping

import anyio
from attrs import define, field

from domain.errors import CompileError
from domain.model import Json, Language, Outcome, Status, Workspace

Program = Callable[[Mapping[str, Json]], Awaitable[Json]]


@define
class ScriptedRuntime:
    """A runtime whose function `code` names a Python coroutine in `programs`."""

    programs: dict[str, Program] = field(factory=dict)
    language: Language = Language.NODEJS
    timeout_s: float = 5.0
    calls: list[tuple[str, str, Json]] = field(factory=list)
    evicted: list[str] = field(factory=list)
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        for name, fn in workspace.functions_in(self.language).items():
            if fn.code not in self.programs:
                raise CompileError(f"{name}: unknown program {fn.code!r}", function=name, line=1, column=1)
        return {"scripted.txt": "\n".join(f"{n}={f.code}" for n, f in workspace.functions.items())}

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        self.calls.append((workspace.id, function, dict(params)))
        program = self.programs[workspace.function(function).code]
        with anyio.move_on_after(self.timeout_s):
            try:
                return Outcome(Status.SUCCEEDED, result=await program(params))
            except Exception as exc:  # the "user code" raised
                return Outcome(Status.FAILED, error={"name": type(exc).__name__, "message": str(exc)})
        return Outcome(Status.TIMED_OUT, error={"message": f"timed out after {self.timeout_s} s"})

    async def evict(self, workspace_id: str) -> None:
        self.evicted.append(workspace_id)

    def health(self) -> Mapping[str, Json]:
        return {"status": "ok" if self.started and not self.closed else "starting"}

    async def aclose(self) -> None:
        self.closed = True


async def echo(params: Mapping[str, Json]) -> Json:
    return dict(params)


async def boom(params: Mapping[str, Json]) -> Json:
    raise ValueError("boom")


async def spin(params: Mapping[str, Json]) -> Json:
    await anyio.sleep_forever()


PROGRAMS: dict[str, Program] = {"echo": echo, "boom": boom, "spin": spin}
