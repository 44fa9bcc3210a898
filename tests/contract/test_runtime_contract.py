"""What every Runtime adapter must do, run against each one (KITS): fake, real Node host, Python kernels,
and the remote Python runtime (a real `functions python-api` process; and, without kernels, the python-api
served in-process over the fake)."""

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from attrs import frozen

from adapters.hosts.dedicated import DedicatedRuntime
from adapters.node.runtime import NodeRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.errors import CompileError
from domain.model import Function, Language, Status, Workspace
from ports.runtime import Runtime
from tests.fakes import PROGRAMS, ScriptedRuntime
from tests.python.kernels import OTHER_PYTHONS, kernel, python_runtime
from tests.remote import InProcessRemote, ProcessRemote

pytestmark = pytest.mark.anyio
TIMEOUT_S = 0.5


@frozen
class Kit:
    """A runtime, the code of its echo/boom/spin functions, and a body that does not compile."""

    make: Callable[[], Runtime]
    echo: str
    boom: str
    spin: str
    broken: str
    language: Language = Language.NODEJS

    def workspace(self, workspace_id: str = "kit") -> Workspace:
        functions = {name: Function(getattr(self, name), self.language) for name in ("echo", "boom", "spin")}
        return Workspace(workspace_id, functions)


def node_runtime(**overrides: Any) -> NodeRuntime:
    settings: dict[str, Any] = {
        "timeout_ms": int(TIMEOUT_S * 1000),
        "max_workers": 50,
        "idle_timeout_s": 3600,
        "max_old_generation_mb": 64,
        "builtin_modules": ["crypto", "util"],
    }
    return NodeRuntime(**{**settings, **overrides})


def dedicated_node_runtime() -> DedicatedRuntime:
    """FUNCTIONS_ISOLATION=dedicated: a Node host per workspace, saves checked by a shared one."""
    return DedicatedRuntime(
        lambda _workspace_id: node_runtime(max_workers=1),
        language=Language.NODEJS,
        max_hosts=50,
        idle_timeout_s=3600,
        checker=node_runtime(max_workers=1, packages_root=None),
    )


def remote_over_fake() -> InProcessRemote:
    fake = ScriptedRuntime(programs=PROGRAMS, language=Language.PYTHON, timeout_s=TIMEOUT_S)
    return InProcessRemote(fake, timeout_ms=int(TIMEOUT_S * 1000))


KITS: dict[str, tuple[Kit, list[pytest.MarkDecorator]]] = {
    "fake": (
        Kit(lambda: ScriptedRuntime(programs=PROGRAMS, timeout_s=TIMEOUT_S), "echo", "boom", "spin", "?"),
        [],
    ),
    "node": (
        Kit(node_runtime, "return parameters;", "throw new Error('boom');", "while (true) {}", "return 1 +;"),
        [pytest.mark.node],
    ),
    "node-dedicated": (
        Kit(
            dedicated_node_runtime,
            "return parameters;",
            "throw new Error('boom');",
            "while (true) {}",
            "return 1 +;",
        ),
        [pytest.mark.node],
    ),
    "remote-fake": (Kit(remote_over_fake, "echo", "boom", "spin", "?", Language.PYTHON), []),
    # `functions python-api` as a process, serving the real kernels, reached over HTTP.
    "remote": (
        Kit(
            functools.partial(ProcessRemote, timeout_ms=int(TIMEOUT_S * 1000), KERNEL_POOL_SIZE="2"),
            "return parameters",
            "raise ValueError('boom')",
            "while True: pass",
            "return 1 +",
            Language.PYTHON,
        ),
        [kernel],
    ),
    "python": (
        Kit(
            python_runtime,
            "return parameters",
            "raise ValueError('boom')",
            "while True: pass",
            "return 1 +",
            Language.PYTHON,
        ),
        [kernel],
    ),
    # The same suite with kernels under each other Python 3.12+ found (per-interpreter GILs); absent: skipped.
    **{
        f"python{version}": (
            Kit(
                functools.partial(python_runtime, python_binary=binary),
                "return parameters",
                "raise ValueError('boom')",
                "while True: pass",
                "return 1 +",
                Language.PYTHON,
            ),
            [kernel] if binary else [kernel, pytest.mark.skip(reason=f"no working python{version} here")],
        )
        for version, binary in OTHER_PYTHONS.items()
    },
}


@pytest.fixture(params=[pytest.param(name, marks=marks) for name, (_, marks) in sorted(KITS.items())])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Kit, Workspaces]]:
    kit = KITS[request.param][0]
    runtime = kit.make()
    await runtime.start()
    service = Workspaces(InMemoryStore(), {kit.language: runtime})
    await service.save(kit.workspace())
    try:
        yield kit, service
    finally:
        await runtime.aclose()


async def test_a_run_returns_the_functions_value(kit: tuple[Kit, Workspaces]) -> None:
    _, service = kit
    outcome = await service.run("kit", "echo", {"x": 1, "nested": {"y": [1, "two"]}})
    assert outcome.status is Status.SUCCEEDED
    assert outcome.result == {"x": 1, "nested": {"y": [1, "two"]}}
    assert outcome.duration_ms >= 0


async def test_a_raise_is_a_failed_outcome_not_an_exception(kit: tuple[Kit, Workspaces]) -> None:
    _, service = kit
    outcome = await service.run("kit", "boom")
    assert outcome.status is Status.FAILED
    assert outcome.error is not None and outcome.error["message"] == "boom"


async def test_runaway_code_times_out_and_the_runtime_keeps_working(kit: tuple[Kit, Workspaces]) -> None:
    _, service = kit
    outcome = await service.run("kit", "spin")
    assert outcome.status is Status.TIMED_OUT
    assert (await service.run("kit", "echo", {"after": True})).result == {"after": True}


async def test_code_that_does_not_compile_is_refused_and_the_old_version_stays(
    kit: tuple[Kit, Workspaces],
) -> None:
    definition, service = kit
    with pytest.raises(CompileError):
        await service.save(
            definition.workspace().with_function("broken", Function(definition.broken, definition.language))
        )
    assert "broken" not in (await service.get("kit")).functions
    assert (await service.run("kit", "echo", {"still": "here"})).result == {"still": "here"}


async def test_a_save_generates_files_for_its_functions(kit: tuple[Kit, Workspaces]) -> None:
    definition, service = kit
    runtime = service.runtime(definition.language)
    generated = await runtime.prepare(definition.workspace())
    assert generated and all(isinstance(text, str) and text for text in generated.values())


async def test_an_evicted_workspace_runs_again(kit: tuple[Kit, Workspaces]) -> None:
    definition, service = kit
    await service.run("kit", "echo", {})
    await service.runtime(definition.language).evict("kit")
    assert (await service.run("kit", "echo", {"again": 1})).result == {"again": 1}


async def test_health_says_ok_once_started(kit: tuple[Kit, Workspaces]) -> None:
    definition, service = kit
    assert service.runtime(definition.language).health()["status"] == "ok"
