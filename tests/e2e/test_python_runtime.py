"""The python contract of SPEC §4, against real kernel processes (no HTTP in between)."""

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.python.runtime import PythonRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.errors import CompileError, Unavailable
from domain.model import Json, Language, Outcome, Status
from tests.python.kernels import kernel_pythons, python_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]


@pytest.fixture
async def python() -> AsyncIterator[PythonRuntime]:
    runtime = python_runtime(timeout_ms=1000)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
def service(python: PythonRuntime) -> Workspaces:
    return Workspaces(InMemoryStore(), {Language.PYTHON: python})


async def save(service: Workspaces, functions: dict[str, Any], workspace_id: str = "w") -> None:
    body = {
        "functions": {
            name: {"language": "python", **(f if isinstance(f, dict) else {"code": f})}
            for name, f in functions.items()
        }
    }
    await service.save(workspace_from_body(workspace_id, body))


async def run(service: Workspaces, code: str, params: Json = None) -> Outcome:
    await save(service, {"f": code})
    return await service.run("w", "f", params)


async def result_of(service: Workspaces, code: str, params: Json = None) -> Json:
    outcome = await run(service, code, params)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


async def error_of(service: Workspaces, code: str, status: Status = Status.FAILED) -> dict[str, Any]:
    outcome = await run(service, code)
    assert outcome.status is status, (outcome.status, outcome.error)
    assert outcome.error is not None
    return dict(outcome.error)


async def test_declared_parameters_are_locals_with_their_defaults(service: Workspaces) -> None:
    params = {"name": {"type": "string", "default": "world"}, "my-key": {"type": "number"}}
    code = "return [name, parameters['my-key'], parameters['extra']]"
    await save(service, {"hello": {"code": code, "parameters": params}})
    assert (await service.run("w", "hello", {"my-key": 2, "extra": True})).result == ["world", 2, True]


async def test_a_body_that_assigns_result_returns_it_and_await_makes_it_async(service: Workspaces) -> None:
    assert await result_of(service, "x = 2\nresult = x * 21") == 42
    assert await result_of(service, "async def twice(x):\n    return x * 2\nreturn await twice(4)") == 8


async def test_functions_call_each_other_by_keyword_and_through_functions(service: Workspaces) -> None:
    await save(
        service,
        {
            "funcA": "return 'world'",
            "funcB": "return 'hello ' + funcA()",
            "my-func": {"code": "return x * 2", "parameters": {"x": {"type": "number"}}},
            "caller": "return functions['my-func'](x=21)",
        },
    )
    assert (await service.run("w", "funcB")).result == "hello world"
    assert (await service.run("w", "caller")).result == 42


async def test_cache_is_kept_across_runs_and_not_shared_between_workspaces(service: Workspaces) -> None:
    count = "cache['n'] = cache.get('n', 0) + 1\nreturn cache['n']"
    await save(service, {"count": count}, "a")
    await save(service, {"count": count}, "b")
    assert [(await service.run("a", "count")).result for _ in range(3)] == [1, 2, 3]
    assert (await service.run("b", "count")).result == 1


async def test_print_and_logging_go_to_the_logs_with_their_levels(service: Workspaces) -> None:
    code = (
        "import logging\nprint('plain', 1)\nlogging.debug('d')\nlogging.info('i')\n"
        "logging.getLogger('mine').warning('w %s', 2)\nlogging.error('e')\nreturn None"
    )
    outcome = await run(service, code)
    assert [(e.level, e.message) for e in outcome.logs] == [
        ("log", "plain 1"),
        ("debug", "d"),
        ("info", "i"),
        ("warn", "w 2"),
        ("error", "e"),
    ]
    assert all(e.timestamp.endswith("Z") for e in outcome.logs)


async def test_logs_are_capped_and_the_last_entry_says_how_much_was_dropped(service: Workspaces) -> None:
    outcome = await run(service, "for i in range(1500):\n    print(i)")
    assert len(outcome.logs) == 1000
    assert "501 more log entries" in outcome.logs[-1].message


async def test_results_become_json_as_the_spec_says(service: Workspaces) -> None:
    code = (
        "import datetime, decimal\n"
        "return {'t': (1, 2), 's': {3}, 'd': datetime.date(2024, 1, 2),"
        " 'dt': datetime.datetime(2024, 1, 2, 3, 4, 5), 'n': decimal.Decimal('1.5'), 'b': b'hi'}"
    )
    assert await result_of(service, code) == {
        "t": [1, 2],
        "s": [3],
        "d": "2024-01-02",
        "dt": "2024-01-02T03:04:05",
        "n": 1.5,
        "b": "aGk=",
    }
    error = await error_of(service, "return object()", Status.NOT_SERIALIZABLE)
    assert "object" in error["message"]


async def test_a_raise_carries_its_class_message_and_a_stack_in_the_users_lines(service: Workspaces) -> None:
    await save(service, {"inner": "x = 1\nraise ValueError('bad value')", "outer": "\nreturn inner()"})
    outcome = await service.run("w", "outer")
    assert outcome.error is not None
    assert (outcome.error["name"], outcome.error["message"]) == ("ValueError", "bad value")
    stack = outcome.error["stack"]
    assert 'File "outer", line 2, in outer' in stack and 'File "inner", line 2, in inner' in stack
    assert "kernel" not in stack and "sandbox" not in stack


async def test_a_compile_error_names_function_line_and_column_and_saves_nothing(service: Workspaces) -> None:
    await save(service, {"ok": "return 1"})
    with pytest.raises(CompileError) as caught:
        await save(service, {"ok": "return 1", "bad": "x = 1\nreturn (2 +"})
    assert (caught.value.details["function"], caught.value.details["line"]) == ("bad", 2)
    assert "bad" not in (await service.get("w")).functions


async def test_introspection_attributes_are_refused_at_save(service: Workspaces) -> None:
    for code in (
        "return ().__class__.__base__.__subclasses__()",
        "return f.__globals__",
        "return g.gi_frame",
    ):
        with pytest.raises(CompileError):
            await save(service, {"f": code})


@pytest.mark.parametrize(
    "code",
    [
        "import os",
        "from os import path",
        "import subprocess",
        "return __import__('os')",
        "import importlib",
        "from sys import modules",
    ],
)
async def test_refused_imports_name_the_module_and_the_setting(service: Workspaces, code: str) -> None:
    error = await error_of(service, code)
    assert error["name"] == "ImportError"
    assert "PYTHON_BUILTIN_MODULES" in error["message"]


@pytest.mark.parametrize(
    "code",
    [
        "import tempfile\nreturn tempfile._os",
        "import logging\nreturn logging.sys",
        "import random\nreturn random._os",
        "return getattr(cache, '__class__')",
        "import operator\nreturn operator.attrgetter('__globals__')(print)",
        "import logging.config",
    ],
)
async def test_allowed_modules_do_not_hand_out_refused_ones(service: Workspaces, code: str) -> None:
    error = await error_of(service, code)
    assert error["name"] in ("AttributeError", "ImportError"), error


async def test_submodules_of_allowed_packages_import(service: Workspaces) -> None:
    code = (
        "import xml.etree.ElementTree as ET\nfrom urllib.parse import quote\nimport json\n"
        "return [ET.fromstring('<a>x</a>').text, quote('a b'), json.dumps([1])]"
    )
    assert await result_of(service, code) == ["x", "a%20b", "[1]"]


async def test_numpy_runs_in_a_kernel_of_its_own() -> None:
    python = python_runtime(timeout_ms=1000, python_binary=sys.executable)  # the service venv's numpy
    await python.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: python})
        assert await result_of(service, "import numpy as np\nreturn np.arange(4) * 2") == [0, 2, 4, 6]
        assert python.kernel_of("w") not in python.kernel_pids
        await save(service, {"g": "return 1"}, "plain")
        await service.run("plain", "g")
        # Subinterpreters (3.12+): in the pool; before, every workspace has a kernel of its own.
        assert (python.kernel_of("plain") in python.kernel_pids) is python.interpreter.subinterpreters
    finally:
        await python.aclose()


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(1e9)"])
async def test_runaway_code_times_out_within_a_second_and_the_next_run_works(
    service: Workspaces, code: str
) -> None:
    await save(service, {"spin": code, "ok": "return 'ok'"})
    started = time.monotonic()
    outcome = await service.run("w", "spin")
    assert outcome.status is Status.TIMED_OUT
    assert time.monotonic() - started < 1.0 + 1.0
    assert (await service.run("w", "ok")).result == "ok"


async def test_one_workspace_spinning_does_not_stall_the_others(service: Workspaces) -> None:
    await save(service, {"spin": "while True: pass"}, "busy")
    await save(service, {"hi": "return 'hi'"}, "calm")
    await service.run("calm", "hi")
    spinning = asyncio.create_task(service.run("busy", "spin"))
    await asyncio.sleep(0.05)
    latencies: list[float] = []
    while not spinning.done() and len(latencies) < 200:
        started = time.monotonic()
        outcome = await service.run("calm", "hi")
        latencies.append(time.monotonic() - started)
        assert outcome.result == "hi"
        await asyncio.sleep(0.01)
    assert (await spinning).status is Status.TIMED_OUT
    latencies.sort()
    assert len(latencies) > 10 and latencies[int(len(latencies) * 0.99)] < 1.0


async def test_a_killed_kernel_fails_its_runs_in_flight_and_is_replaced(
    service: Workspaces, python: PythonRuntime
) -> None:
    await save(service, {"slow": "import time\ntime.sleep(0.5)\nreturn 1", "ok": "return 'ok'"})
    await service.run("w", "ok")
    pid = python.kernel_of("w")
    assert pid is not None
    running = asyncio.create_task(service.run("w", "slow"))
    await asyncio.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(Unavailable):
        await running
    assert (await service.run("w", "ok")).result == "ok"
    assert python.kernel_of("w") != pid


async def test_a_memory_bomb_is_a_resource_limit_and_the_kernel_keeps_serving() -> None:
    # A timeout of its own: on a loaded machine, touching 256 MB can take longer than the usual second.
    runtime = python_runtime(timeout_ms=10_000, max_memory_mb=256)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
        await save(service, {"other": "return 'fine'"}, "other")
        bomb = "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))"
        outcome = await run(service, bomb)
        assert outcome.status is Status.RESOURCE_LIMIT
        assert (await service.run("other", "other")).result == "fine"
        assert (await service.run("w", "f")).status is Status.RESOURCE_LIMIT  # and it can be run again
    finally:
        await runtime.aclose()


async def test_least_recently_used_workspaces_are_evicted_and_lose_their_cache() -> None:
    runtime = python_runtime(max_workspaces=1)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
        count = "cache['n'] = cache.get('n', 0) + 1\nreturn cache['n']"
        await save(service, {"count": count}, "a")
        await save(service, {"count": count}, "b")
        assert (await service.run("a", "count")).result == 1
        assert (await service.run("b", "count")).result == 1  # a is evicted
        assert (await service.run("a", "count")).result == 1
    finally:
        await runtime.aclose()


async def test_idle_workspaces_are_evicted() -> None:
    runtime = python_runtime(idle_timeout_s=0.2)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
        await save(service, {"count": "cache['n'] = cache.get('n', 0) + 1\nreturn cache['n']"})
        assert (await service.run("w", "count")).result == 1
        await asyncio.sleep(0.6)
        outcome = await service.run("w", "count")
        assert (outcome.result, outcome.cold) == (1, True)
    finally:
        await runtime.aclose()


async def test_a_first_run_is_cold_and_the_next_is_warm_with_timings(service: Workspaces) -> None:
    first = await run(service, "return 1")
    second = await service.run("w", "f")
    assert first.cold and not second.cold
    assert "cold" in first.timings and {"run", "queue"} <= set(second.timings)


async def test_a_save_returns_a_readable_main_py(python: PythonRuntime) -> None:
    body = {
        "functions": {
            "hello": {"code": "return 'hi ' + name", "language": "python", "parameters": {"name": {}}}
        }
    }
    generated = await python.prepare(workspace_from_body("w", body))
    assert "def hello(parameters, name):\n    return 'hi ' + name" in generated["main.py"]


@pytest.mark.parametrize("kernel_python", kernel_pythons())
async def test_a_busy_workspace_does_not_stall_another_on_the_same_kernel(kernel_python: str) -> None:
    runtime = python_runtime(pool_size=1, timeout_ms=10_000, python_binary=kernel_python)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
        await save(service, {"burn": "return sum(i * i for i in range(3 * 10**7))"}, "busy")
        await save(service, {"hi": "return 'hi'"}, "calm")
        assert (await service.run("calm", "hi")).result == "hi"
        busy = asyncio.create_task(service.run("busy", "burn"))
        await asyncio.sleep(0.2)
        waits: list[float] = []
        while not busy.done():
            started = time.monotonic()
            assert (await service.run("calm", "hi")).result == "hi"
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.01)
        assert (await busy).status is Status.SUCCEEDED
        assert len(waits) > 5, "the busy run ended before the calm one could be measured"
        assert max(waits) < 0.5, f"a run of another workspace waited {max(waits):.2f} s for the busy one"
    finally:
        await runtime.aclose()


async def test_a_kernel_that_built_many_interpreters_is_recycled_without_failing_a_run() -> None:
    # CPython keeps some memory of every interpreter it closes: after `recycle_after_loads` loads, a
    # kernel takes no new workspaces, and once its last one has moved on, the spare replaces it.
    runtime = python_runtime(recycle_after_loads=3)
    if not runtime.interpreter.subinterpreters:
        pytest.skip("only 3.11 here: a kernel process per workspace, no pool kernel to recycle")
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
        first = set(runtime.kernel_pids)
        for version in range(12):
            await save(service, {"v": f"return {version}"}, f"w{version % 2}")
            assert (await service.run(f"w{version % 2}", "v")).result == version
        await asyncio.sleep(0.3)  # the drained kernel closes in the background
        assert runtime.restarts >= 1
        assert set(runtime.kernel_pids) != first
        for workspace in ("w0", "w1"):
            assert (await service.run(workspace, "v")).status is Status.SUCCEEDED
    finally:
        await runtime.aclose()
