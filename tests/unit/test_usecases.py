from collections.abc import Mapping

import pytest

from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.errors import CompileError, InvalidParameters, InvalidRequest, NotFound, Unavailable
from domain.model import Function, Json, Language, Parameter, ParamType, Status, Workspace
from tests.fakes import PROGRAMS, ScriptedRuntime

pytestmark = pytest.mark.anyio


async def service_with(*workspaces: Workspace) -> tuple[Workspaces, InMemoryStore, ScriptedRuntime]:
    store, runtime = InMemoryStore(), ScriptedRuntime(programs=dict(PROGRAMS))
    for workspace in workspaces:
        await store.save(workspace, {})  # as if saved by an earlier process: no generated files
    return Workspaces(store, {Language.NODEJS: runtime}), store, runtime


def echoing(**parameters: Parameter) -> Workspace:
    return Workspace("demo", {"echo": Function("echo", parameters=parameters or None)})


class RefusingStore:
    """A store that fails the test if it is touched at all."""

    async def save(self, workspace: Workspace, generated: Mapping[str, str]) -> Workspace:
        raise AssertionError("storage touched")

    async def get(self, workspace_id: str) -> Workspace:
        raise AssertionError("storage touched")

    async def delete(self, workspace_id: str) -> None:
        raise AssertionError("storage touched")

    async def list(self) -> list[str]:
        raise AssertionError("storage touched")


async def test_a_saved_workspace_reads_back_equal_with_a_revision() -> None:
    service, store, _ = await service_with()
    saved = await service.save(echoing())
    assert saved == echoing() and saved.revision
    assert await service.get("demo") == echoing()
    assert store.generated["demo"]


async def test_a_save_evicts_the_old_code_from_every_runtime() -> None:
    service, _, runtime = await service_with()
    await service.save(echoing())
    assert runtime.evicted == ["demo"]


async def test_list_gives_the_sorted_ids() -> None:
    service, _, _ = await service_with()
    for workspace_id in ("b", "a", "c"):
        await service.save(Workspace(workspace_id))
    assert await service.list() == ["a", "b", "c"]


async def test_a_deleted_workspace_is_gone_and_evicted() -> None:
    service, _, runtime = await service_with(echoing())
    await service.delete("demo")
    assert await service.list() == []
    assert runtime.evicted == ["demo"]
    with pytest.raises(NotFound):
        await service.get("demo")


async def test_deleting_an_unknown_workspace_is_not_found() -> None:
    service, _, _ = await service_with()
    with pytest.raises(NotFound):
        await service.delete("nope")


async def test_a_run_passes_the_parameters_and_returns_the_outcome() -> None:
    service, _, runtime = await service_with(echoing())
    outcome = await service.run("demo", "echo", {"x": 1})
    assert (outcome.status, outcome.result) == (Status.SUCCEEDED, {"x": 1})
    assert runtime.calls == [("demo", "echo", {"x": 1})]


async def test_a_run_without_parameters_gets_an_empty_object() -> None:
    service, _, _ = await service_with(echoing())
    assert (await service.run("demo", "echo")).result == {}


async def test_a_function_that_raises_is_a_failed_outcome() -> None:
    service, _, _ = await service_with(Workspace("demo", {"boom": Function("boom")}))
    outcome = await service.run("demo", "boom")
    assert outcome.status is Status.FAILED
    assert outcome.error == {"name": "ValueError", "message": "boom"}


async def test_a_compile_error_keeps_the_previous_version() -> None:
    service, _, runtime = await service_with()
    old = await service.save(echoing())
    with pytest.raises(CompileError) as caught:
        await service.save(old.with_function("broken", Function("syntax error")))
    assert caught.value.details["function"] == "broken"
    assert await service.get("demo") == old
    assert runtime.evicted == ["demo"]  # only the successful save evicted


VALUES: dict[ParamType, tuple[Json, Json]] = {  # (a value of the type, a value of another type)
    ParamType.STRING: ("text", 1),
    ParamType.NUMBER: (1.5, "1.5"),
    ParamType.INTEGER: (2, 2.5),
    ParamType.BOOLEAN: (True, 0),
    ParamType.OBJECT: ({"a": 1}, [1]),
    ParamType.ARRAY: ([1, 2], {"0": 1}),
    ParamType.NULL: (None, 0),
}


@pytest.mark.parametrize("kind", list(ParamType))
async def test_a_declared_parameter_of_the_right_type_is_passed(kind: ParamType) -> None:
    service, _, _ = await service_with(echoing(p=Parameter(type=kind)))
    good, _ = VALUES[kind]
    assert (await service.run("demo", "echo", {"p": good})).result == {"p": good}


@pytest.mark.parametrize("kind", list(ParamType))
async def test_a_declared_parameter_of_the_wrong_type_is_refused_naming_it(kind: ParamType) -> None:
    service, _, runtime = await service_with(echoing(p=Parameter(type=kind)))
    _, bad = VALUES[kind]
    with pytest.raises(InvalidParameters) as caught:
        await service.run("demo", "echo", {"p": bad})
    assert "'p'" in caught.value.message and kind.value in caught.value.message
    assert caught.value.details == {"parameter": "p", "expected": kind.value}
    assert runtime.calls == []


async def test_booleans_are_not_numbers_and_whole_floats_are_integers() -> None:
    service, _, _ = await service_with(
        echoing(n=Parameter(type=ParamType.NUMBER), i=Parameter(type=ParamType.INTEGER))
    )
    with pytest.raises(InvalidParameters):
        await service.run("demo", "echo", {"n": True})
    assert (await service.run("demo", "echo", {"i": 3.0})).result == {"i": 3.0}


async def test_a_missing_parameter_takes_its_default_and_undeclared_ones_pass_through() -> None:
    declared = echoing(name=Parameter(type=ParamType.STRING, default="world"), plain=Parameter())
    service, _, _ = await service_with(declared)
    assert (await service.run("demo", "echo", {"extra": [1]})).result == {"name": "world", "extra": [1]}


async def test_a_null_default_is_a_default() -> None:
    service, _, _ = await service_with(echoing(p=Parameter(default=None)))
    assert (await service.run("demo", "echo", {})).result == {"p": None}


async def test_parameters_that_are_not_an_object_are_an_invalid_request() -> None:
    service, _, _ = await service_with(echoing())
    with pytest.raises(InvalidRequest):
        await service.run("demo", "echo", [1, 2])


async def test_an_unknown_function_or_workspace_is_not_found() -> None:
    service, _, _ = await service_with(echoing())
    with pytest.raises(NotFound, match="'nope'"):
        await service.run("demo", "nope")
    with pytest.raises(NotFound, match="'other'"):
        await service.run("other", "echo")


@pytest.mark.parametrize(
    ("workspace_id", "function"), [("../etc", "echo"), ("demo", "1st"), (".hidden", "f")]
)
async def test_bad_names_are_an_invalid_request_before_any_storage_call(
    workspace_id: str, function: str
) -> None:
    service = Workspaces(RefusingStore(), {Language.NODEJS: ScriptedRuntime()})
    with pytest.raises(InvalidRequest):
        await service.run(workspace_id, function)


@pytest.mark.parametrize("workspace_id", ["", "a/b", "x" * 129, "-dash"])
async def test_a_bad_workspace_id_never_reaches_the_store(workspace_id: str) -> None:
    service = Workspaces(RefusingStore(), {Language.NODEJS: ScriptedRuntime()})
    with pytest.raises(InvalidRequest):
        await service.get(workspace_id)
    with pytest.raises(InvalidRequest):
        await service.delete(workspace_id)


async def test_a_python_function_without_a_python_runtime_is_unavailable() -> None:
    python = Workspace("py", {"f": Function("echo", language=Language.PYTHON)})
    service, _, _ = await service_with(python)
    with pytest.raises(Unavailable, match="python"):
        await service.run("py", "f")
    with pytest.raises(Unavailable):
        await service.save(python)


async def test_regenerate_all_saves_every_workspace_again() -> None:
    service, store, runtime = await service_with(echoing(), Workspace("other", {"boom": Function("boom")}))
    assert await service.regenerate_all() == {"demo": "ok", "other": "ok"}
    assert store.generated["demo"] and store.generated["other"]  # seeded with none
    assert runtime.evicted == ["demo", "other"]


async def test_regenerate_all_goes_on_past_a_workspace_that_no_longer_compiles() -> None:
    broken = Workspace("broken", {"f": Function("no such program")})
    service, store, runtime = await service_with(echoing(), broken)
    report = await service.regenerate_all()
    assert report["demo"] == "ok" and "no such program" in report["broken"]
    assert store.generated["demo"] and runtime.evicted == ["demo"]
