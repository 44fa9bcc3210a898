"""The host protocol (docs/hosts.md), checked against each host directly: the Node host and the Python
kernel (main interpreter, and subinterpreters on a 3.12+ Python) get the same messages and must answer
them the same way. No runtime driver in between: what a host says is what the test reads."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from attrs import frozen

from adapters.hosts.process import HostProcess
from adapters.hosts.protocol import (
    PROTOCOL,
    Abort,
    Compile,
    Compiled,
    Evict,
    Load,
    NodeSource,
    Result,
    Run,
    RunStatus,
)
from adapters.node.script import compile_sources, generate_script
from adapters.python.script import function_specs
from domain.model import Function, Language, Workspace
from tests.contract.test_runtime_contract import node_runtime
from tests.python.kernels import OTHER_PYTHONS, python_runtime

pytestmark = pytest.mark.anyio


@frozen
class Dialect:
    """One host, and the code of the same functions in its language."""

    language: Language
    add: str  # returns a + b and logs one line
    boom: str  # throws ValueError("boom")
    broken: str  # does not compile
    spin: str  # never ends


NODE = Dialect(
    Language.NODEJS,
    "console.log('adding'); return parameters.a + parameters.b;",
    "throw new TypeError('boom');",
    "return 1 +;",
    "while (true) {}",
)
PYTHON = Dialect(
    Language.PYTHON,
    "print('adding')\nreturn parameters['a'] + parameters['b']",
    "raise TypeError('boom')",
    "return 1 +",
    "while True:\n    pass",
)


def workspace(dialect: Dialect, revision: str = "1") -> Workspace:
    functions = {name: Function(getattr(dialect, name), dialect.language) for name in ("add", "boom", "spin")}
    return Workspace("contract", functions, revision=revision)


def load(dialect: Dialect, revision: str = "1") -> Load:
    code = workspace(dialect, revision)
    if dialect.language is Language.NODEJS:
        return Load(code.id, revision, generate_script(code), None)
    return Load(code.id, revision, functions=function_specs(code))


def compile_check(dialect: Dialect, code: str) -> Compile:
    checked = Workspace("contract", {"f": Function(code, dialect.language)})
    if dialect.language is Language.NODEJS:
        return Compile([NodeSource(s.name, s.text, s.body) for s in compile_sources(checked)])
    return Compile(function_specs(checked))


def argv_of(host: str) -> list[str]:
    if host == "node":
        runtime = node_runtime()
        runtime.node_binary = "node"
        return runtime._launch_plan().argv
    if host == "kernel-main":
        return python_runtime().launcher.plan(dedicated=True).argv
    binary = OTHER_PYTHONS[host.removeprefix("kernel-pool-")]
    assert binary is not None
    return python_runtime(python_binary=binary).launcher.plan(dedicated=False).argv


HOSTS = [
    pytest.param("node", marks=pytest.mark.node),
    pytest.param("kernel-main", marks=pytest.mark.kernel),
    *(
        pytest.param(
            f"kernel-pool-{version}",
            marks=[
                pytest.mark.kernel,
                pytest.mark.skipif(binary is None, reason=f"no Python {version} here"),
            ],
        )
        for version, binary in OTHER_PYTHONS.items()
    ),
]


@pytest.fixture(params=HOSTS)
async def host(request: pytest.FixtureRequest) -> AsyncIterator[tuple[HostProcess, Dialect]]:
    name: str = request.param
    process = HostProcess(argv_of(name), name=name)
    await process.start(ready_timeout_s=30.0)
    try:
        yield process, NODE if name == "node" else PYTHON
    finally:
        await process.close()


async def run(process: HostProcess, function: str, params: dict[str, Any], revision: str = "1") -> Result:
    reply = await process.request(Run("contract", revision, function, params).wire, timeout_s=30.0)
    assert isinstance(reply, Result)
    return reply


async def test_the_first_line_says_ready_with_the_protocol_and_the_version(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, _ = host
    assert process.ready.protocol == PROTOCOL and process.ready.version


async def test_compile_names_the_function_line_and_column_of_what_does_not_compile(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, dialect = host
    good = await process.request(compile_check(dialect, dialect.add).wire, timeout_s=30.0)
    assert isinstance(good, Compiled) and good.errors == []
    bad = await process.request(compile_check(dialect, dialect.broken).wire, timeout_s=30.0)
    assert isinstance(bad, Compiled) and len(bad.errors) == 1
    error = bad.errors[0]
    assert error["function"] == "f" and error["line"] == 1 and isinstance(error["column"], int)
    assert isinstance(error["message"], str) and error["message"]


async def test_a_run_of_code_the_host_does_not_hold_answers_not_loaded(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, dialect = host
    assert (await run(process, "add", {"a": 1, "b": 2})).status is RunStatus.NOT_LOADED
    process.send(load(dialect, "1").wire())
    assert (await run(process, "add", {"a": 1, "b": 2}, revision="2")).status is RunStatus.NOT_LOADED
    process.send(Evict("contract").wire())
    assert (await run(process, "add", {"a": 1, "b": 2})).status is RunStatus.NOT_LOADED


async def test_a_loaded_function_runs_with_its_parameters_logs_and_timings(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, dialect = host
    process.send(load(dialect).wire())
    first = await run(process, "add", {"a": 2, "b": 3})
    assert first.status is RunStatus.SUCCEEDED and first.result == 5
    assert [(e["level"], e["message"]) for e in first.logs] == [("log", "adding")]
    assert first.cold and first.duration_ms >= 0 and first.started_at and first.received_at
    second = await run(process, "add", {"a": "x", "b": "y"})
    assert second.status is RunStatus.SUCCEEDED and second.result == "xy" and not second.cold
    outcome = second.outcome()
    assert outcome.ok and outcome.result == "xy" and outcome.timings["run"] == second.duration_ms


async def test_a_function_that_throws_is_a_failed_run_naming_the_error(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, dialect = host
    process.send(load(dialect).wire())
    failed = await run(process, "boom", {})
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert failed.error["name"] == "TypeError" and failed.error["message"] == "boom"


async def test_runs_in_flight_get_their_own_answers(host: tuple[HostProcess, Dialect]) -> None:
    process, dialect = host
    process.send(load(dialect).wire())
    results = await asyncio.gather(*(run(process, "add", {"a": i, "b": 1}) for i in range(20)))
    assert [r.result for r in results] == [i + 1 for i in range(20)]


async def test_a_line_that_is_not_a_message_ends_the_host_after_a_protocol_error(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, _ = host
    assert process._stdin is not None
    process._stdin.write(b"this is not JSON\n")
    await asyncio.wait_for(process.wait_closed(), 10)
    assert "code 2" in process.exit_reason


async def test_an_unknown_message_type_ends_the_host_after_a_protocol_error(
    host: tuple[HostProcess, Dialect],
) -> None:
    process, _ = host
    process.send({"type": "reboot"})
    await asyncio.wait_for(process.wait_closed(), 10)
    assert "code 2" in process.exit_reason


async def test_shutdown_ends_the_host_cleanly(host: tuple[HostProcess, Dialect]) -> None:
    process, _ = host
    process.send({"type": "shutdown"})
    await asyncio.wait_for(process.wait_closed(), 10)
    assert "code 0" in process.exit_reason


@pytest.mark.node
async def test_node_an_aborted_run_ends_its_worker_and_the_workspace_runs_again() -> None:
    """The service owns deadlines: at one, it sends abort; the Node host ends the worker and confirms."""
    process = HostProcess(argv_of("node"), name="node")
    await process.start()
    try:
        process.send(load(NODE).wire())
        spinning = asyncio.create_task(run(process, "spin", {}))
        waiting = asyncio.create_task(run(process, "add", {"a": 1, "b": 1}))  # same worker, queued
        await asyncio.sleep(0.5)
        assert not spinning.done()
        process.send(Abort(1).wire())  # the spin run's id: the first request of this host
        spun, queued = await asyncio.wait_for(asyncio.gather(spinning, waiting), 10)
        assert spun.status is RunStatus.ABORTED and queued.status is RunStatus.ABORTED
        again = await run(process, "add", {"a": 1, "b": 1})
        assert again.status is RunStatus.SUCCEEDED and again.result == 2 and again.cold
    finally:
        await process.close()
