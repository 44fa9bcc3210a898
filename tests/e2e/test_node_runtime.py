"""The nodejs contract of SPEC §3, against a real Node host (no HTTP in between)."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.node.runtime import NodeRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.errors import CompileError, InvalidRequest, Unavailable
from domain.model import Json, Language, Outcome, Status
from tests.contract.test_runtime_contract import node_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.node]


@pytest.fixture
async def node() -> AsyncIterator[NodeRuntime]:
    runtime = node_runtime(timeout_ms=1000)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.fixture
def service(node: NodeRuntime) -> Workspaces:
    return Workspaces(InMemoryStore(), {Language.NODEJS: node})


async def save(service: Workspaces, functions: dict[str, Any], workspace_id: str = "w") -> None:
    body = {"functions": {name: f if isinstance(f, dict) else {"code": f} for name, f in functions.items()}}
    await service.save(workspace_from_body(workspace_id, body))


async def result_of(service: Workspaces, code: str, params: Json = None) -> Json:
    await save(service, {"f": code})
    outcome = await service.run("w", "f", params)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


async def test_declared_parameters_are_locals_with_their_defaults(service: Workspaces) -> None:
    params = {"name": {"type": "string", "default": "world"}, "my-key": {"type": "number"}}
    await save(
        service,
        {"hello": {"code": "return [name, parameters['my-key'], parameters.extra];", "parameters": params}},
    )
    assert (await service.run("w", "hello", {"my-key": 2, "extra": True})).result == ["world", 2, True]


async def test_functions_call_each_other_by_name_and_through_functions(service: Workspaces) -> None:
    await save(
        service,
        {
            "funcA": 'return "world";',
            "funcB": 'return "hello " + (await funcA());',
            "my-func": "return parameters.x * 2;",
            "caller": 'return functions["my-func"]({x: 21});',
        },
    )
    assert (await service.run("w", "funcB")).result == "hello world"
    assert (await service.run("w", "caller")).result == 42


async def test_cache_is_shared_by_functions_and_kept_across_runs(service: Workspaces) -> None:
    count = (
        "let counter = cache['counter']\ncounter = (counter || 0) + 1\ncache['counter'] = counter;\n"
        "return counter;"
    )
    await save(
        service, {"funcA": count, "funcB": "let counter = cache['counter'];\nreturn 'Counter : ' + counter;"}
    )
    assert [(await service.run("w", "funcA")).result for _ in range(3)] == [1, 2, 3]
    assert (await service.run("w", "funcB")).result == "Counter : 3"


async def test_results_become_json_as_documented(service: Workspaces) -> None:
    code = """return {u: undefined, d: new Date(0), b: 12345678901234567890n, m: new Map([[1, 'a']]),
      s: new Set([1, 2]), t: new Uint16Array([1, 2]), buf: Buffer.from('hi'), arr: [undefined, () => 1]};"""
    assert await result_of(service, code) == {
        "d": "1970-01-01T00:00:00.000Z",
        "b": "12345678901234567890",
        "m": {"1": "a"},
        "s": [1, 2],
        "t": [1, 2],
        "buf": [104, 105],
        "arr": [None, None],
    }
    assert await result_of(service, "return undefined;") is None
    assert await result_of(service, "return 7n;") == "7"


@pytest.mark.parametrize(
    "code", ["return () => 1;", "return Symbol('s');", "const a = {}; a.self = a; return a;"]
)
async def test_a_function_symbol_or_cycle_is_not_serializable(service: Workspaces, code: str) -> None:
    await save(service, {"f": code})
    outcome = await service.run("w", "f")
    assert outcome.status is Status.NOT_SERIALIZABLE and outcome.error and outcome.error["message"]


async def test_an_error_names_the_function_and_its_own_line(service: Workspaces) -> None:
    await save(
        service, {"first": "return 1;", "broken": "const a = 1;\n\nnull.boom();", "outer": "await broken();"}
    )
    outcome = await service.run("w", "outer")
    assert outcome.status is Status.FAILED and outcome.error is not None
    assert outcome.error["name"] == "TypeError"
    frames = outcome.error["stack"].splitlines()[1:]
    assert frames[0].strip() == "at broken (broken:3:6)"
    assert frames[1].strip() == "at outer (outer:1:7)"
    assert "index.js" not in outcome.error["stack"] and "worker" not in outcome.error["stack"]


async def test_a_thrown_non_error_keeps_what_was_thrown(service: Workspaces) -> None:
    await save(service, {"f": "throw 'plain text';"})
    outcome = await service.run("w", "f")
    assert outcome.status is Status.FAILED and outcome.error is not None
    assert outcome.error["message"] == "plain text"


async def test_a_compile_error_names_function_line_and_column(service: Workspaces) -> None:
    with pytest.raises(CompileError) as caught:
        await save(service, {"ok": "return 1;", "bad": "const a = 1;\nreturn a +;"})
    assert caught.value.details["function"] == "bad"
    assert (caught.value.details["line"], caught.value.details["column"]) == (2, 11)


async def test_only_the_allowed_globals_are_in_scope(service: Workspaces) -> None:
    names = [
        "process",
        "module",
        "exports",
        "__dirname",
        "__filename",
        "console",
        "require",
        "setTimeout",
        "fetch",
        "URL",
        "TextEncoder",
        "TextDecoder",
        "Buffer",
        "structuredClone",
        "AbortController",
    ]
    code = f"return {names!r}.map((n) => [n, eval('typeof ' + n)]);"
    scope = dict(await result_of(service, code))
    assert {n for n, kind in scope.items() if kind == "undefined"} == {
        "process",
        "module",
        "exports",
        "__dirname",
        "__filename",
    }


async def test_require_allows_only_the_listed_builtins(service: Workspaces) -> None:
    code = (
        "return [require('crypto').createHash('sha1').update('a').digest('hex').length,"
        " typeof require('node:util').format];"
    )
    assert await result_of(service, code) == [40, "function"]
    await save(service, {"f": "return require('fs').readFileSync('/etc/passwd', 'utf8');"})
    outcome = await service.run("w", "f")
    assert outcome.status is Status.FAILED and outcome.error is not None
    assert "'fs'" in outcome.error["message"] and "NODE_BUILTIN_MODULES" in outcome.error["message"]


async def test_host_objects_do_not_lead_back_to_the_hosts_function(service: Workspaces) -> None:
    probes = [
        "console.log.constructor.constructor('return process')()",
        "require.constructor('return process')()",
        "setTimeout.constructor('return process')()",
        "Buffer.from('x').constructor.constructor('return process')()",
        "Object.getPrototypeOf(require('util').format).constructor('return process')()",
    ]
    code = (
        "return ["
        + ", ".join(
            f"(() => {{ try {{ return typeof {p}; }} catch (e) {{ return 'blocked'; }} }})()" for p in probes
        )
        + "];"
    )
    assert await result_of(service, code) == ["blocked"] * len(probes)


async def test_logs_are_captured_per_run_with_levels(service: Workspaces) -> None:
    code = (
        "console.log('a', {b: 1}); console.info('i'); console.warn('w'); console.error('e');"
        " console.debug('d');"
    )
    await save(service, {"f": code})
    outcome = await service.run("w", "f")
    assert [(e.level, e.message) for e in outcome.logs] == [
        ("log", "a { b: 1 }"),
        ("info", "i"),
        ("warn", "w"),
        ("error", "e"),
        ("debug", "d"),
    ]
    assert all(e.timestamp.endswith("Z") for e in outcome.logs)


async def test_two_runs_in_flight_on_one_worker_never_mix_logs(service: Workspaces) -> None:
    code = (
        "for (let i = 0; i < 5; i++) { console.log(tag + i); await new Promise((r) => setTimeout(r, 5)); }"
        " return tag;"
    )
    await save(service, {"f": {"code": code, "parameters": {"tag": {"type": "string"}}}})
    outcomes = await asyncio.gather(*(service.run("w", "f", {"tag": t}) for t in "abcd"))
    for tag, outcome in zip("abcd", outcomes, strict=True):
        assert [e.message for e in outcome.logs] == [f"{tag}{i}" for i in range(5)]


async def test_a_log_flood_is_cut_with_a_note(service: Workspaces) -> None:
    await save(service, {"f": "for (let i = 0; i < 5000; i++) console.log('line ' + i); return 1;"})
    outcome = await service.run("w", "f")
    assert outcome.result == 1 and len(outcome.logs) == 1000
    assert outcome.logs[0].message == "line 0"
    assert "4001 more log entries" in outcome.logs[-1].message


async def test_a_megabyte_of_logs_is_the_limit(service: Workspaces) -> None:
    await save(
        service, {"f": "const s = 'x'.repeat(100000); for (let i = 0; i < 30; i++) console.log(s); return 1;"}
    )
    outcome = await service.run("w", "f")
    assert sum(len(e.message) for e in outcome.logs) <= 1024 * 1024 + 200
    assert "dropped" in outcome.logs[-1].message


async def timed(service: Workspaces, fn: str) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = await service.run("w", fn)
    return outcome, time.monotonic() - started


@pytest.mark.parametrize("code", ["while (true) {}", "await new Promise(() => {});"])
async def test_runaway_code_times_out_and_the_next_run_gets_a_fresh_worker(
    service: Workspaces, code: str
) -> None:
    await save(service, {"loop": code, "count": "cache.n = (cache.n || 0) + 1; return cache.n;"})
    assert (await service.run("w", "count")).result == 1
    outcome, took = await timed(service, "loop")
    assert outcome.status is Status.TIMED_OUT and took < 1.0 + 1.0
    fresh = await service.run("w", "count")
    assert fresh.result == 1 and fresh.cold  # a new worker: the cache went with the old one


async def test_a_memory_bomb_is_a_resource_limit_and_the_next_run_works() -> None:
    # A timeout with room: filling the heap takes over a second on a loaded machine, and the outcome
    # must say why the run ended, not race the clock.
    runtime = node_runtime(timeout_ms=20_000)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.NODEJS: runtime})
        await save(
            service,
            {"bomb": "const a = []; while (true) a.push(new Array(1e6).fill(1.5));", "ok": "return 'ok';"},
        )
        outcome = await service.run("w", "bomb")
        assert outcome.status is Status.RESOURCE_LIMIT
        assert "NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB" in (outcome.error or {})["message"]
        assert (await service.run("w", "ok")).result == "ok"
    finally:
        await runtime.aclose()


async def test_the_first_run_is_cold_and_the_next_warm(service: Workspaces) -> None:
    await save(service, {"f": "return 1;"})
    first, second = await service.run("w", "f"), await service.run("w", "f")
    assert first.cold and "cold" in first.timings
    assert not second.cold and set(second.timings) == {"queue", "run"}


async def test_a_save_replaces_the_code_of_the_next_run(service: Workspaces) -> None:
    await save(service, {"f": "cache.v = 1; return 'old';"})
    assert (await service.run("w", "f")).result == "old"
    await save(service, {"f": "return ['new', cache.v];"})
    assert (await service.run("w", "f")).result == ["new", None]


async def test_fifty_concurrent_runs_of_one_workspace_all_answer(service: Workspaces) -> None:
    await save(
        service,
        {
            "f": {
                "code": "await new Promise((r) => setTimeout(r, 1)); return i * 2;",
                "parameters": {"i": {"type": "integer"}},
            }
        },
    )
    outcomes = await asyncio.gather(*(service.run("w", "f", {"i": i}) for i in range(50)))
    assert [o.result for o in outcomes] == [i * 2 for i in range(50)]


async def test_least_recently_used_workers_go_first() -> None:
    runtime = node_runtime(max_workers=2)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.NODEJS: runtime})
        for workspace_id in ("a", "b", "c"):
            await save(service, {"n": "cache.n = (cache.n || 0) + 1; return cache.n;"}, workspace_id)
        for workspace_id in ("a", "b", "a", "c"):  # c pushes out b, the least recently used
            await service.run(workspace_id, "n")
        assert runtime.health()["workers"] == 2
        assert (await service.run("a", "n")).result == 3
        assert (await service.run("b", "n")).result == 1  # b's worker was terminated: its cache is gone
    finally:
        await runtime.aclose()


async def test_idle_workers_are_terminated() -> None:
    runtime = node_runtime(idle_timeout_s=0.3)
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.NODEJS: runtime})
        await save(service, {"n": "cache.n = (cache.n || 0) + 1; return cache.n;"})
        assert (await service.run("w", "n")).result == 1
        await asyncio.sleep(0.8)
        assert runtime.health()["workers"] == 0
        assert (await service.run("w", "n")).result == 1
    finally:
        await runtime.aclose()


async def test_a_dead_host_fails_runs_in_flight_and_comes_back(
    node: NodeRuntime, service: Workspaces
) -> None:
    await save(service, {"slow": "await new Promise((r) => setTimeout(r, 5000));", "ok": "return 'ok';"})
    in_flight = asyncio.create_task(service.run("w", "slow"))
    await asyncio.sleep(0.2)
    assert node.host_pid is not None
    os.kill(node.host_pid, signal.SIGKILL)
    with pytest.raises(Unavailable):
        await in_flight
    started = time.monotonic()
    assert (await service.run("w", "ok")).result == "ok"
    assert time.monotonic() - started < 3 and node.restarts == 1


async def test_without_node_the_runtime_is_unavailable_and_says_why() -> None:
    runtime = node_runtime(node_binary="no-such-node-binary")
    await runtime.start()
    service = Workspaces(InMemoryStore(), {Language.NODEJS: runtime})
    assert runtime.health()["status"] == "unavailable"
    with pytest.raises(Unavailable, match="no-such-node-binary"):
        await save(service, {"f": "return 1;"})
    await runtime.aclose()


async def test_workspaces_share_neither_cache_nor_globals_nor_functions(service: Workspaces) -> None:
    await save(service, {"set": "cache.secret = 's1'; globalThis.leak = 'g1'; return 1;"}, "one")
    await save(
        service,
        {"peek": "return [cache.secret, globalThis.leak, typeof set, Object.keys(functions)];"},
        "two",
    )
    assert (await service.run("one", "set")).result == 1
    assert (await service.run("two", "peek")).result == [None, None, "undefined", ["peek"]]


async def test_function_names_that_are_object_keys_are_plain_names(service: Workspaces) -> None:
    await save(service, {"constructor": "return 'c';", "__proto__": "return 'p';", "toString": "return 't';"})
    results = [(await service.run("w", name)).result for name in ("constructor", "__proto__", "toString")]
    assert results == ["c", "p", "t"]


async def test_fetch_and_its_classes_load_on_first_use(service: Workspaces) -> None:
    code = (
        "const h = new Headers({a: '1'}); const r = new Response('body', {status: 201});"
        " return [typeof fetch, h.get('a'), r.status, await r.text(), typeof Request, typeof FormData,"
        " typeof Blob];"
    )
    assert await result_of(service, code) == [
        "function",
        "1",
        201,
        "body",
        "function",
        "function",
        "function",
    ]


async def test_values_json_cannot_carry_are_refused_before_they_reach_the_host(
    node: NodeRuntime, service: Workspaces
) -> None:
    await save(service, {"f": "return parameters;"})
    with pytest.raises(InvalidRequest):
        await service.run("w", "f", {"x": float("nan")})
    assert (await service.run("w", "f", {"x": 1})).result == {"x": 1} and node.restarts == 0
