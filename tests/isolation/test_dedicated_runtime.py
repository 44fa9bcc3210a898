"""DedicatedRuntime over real Node hosts: a host process per workspace, started once, closed when let go."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.hosts.dedicated import DedicatedRuntime
from adapters.node.runtime import NodeRuntime
from domain.errors import CompileError, Unavailable
from domain.model import Function, Language, Status, Workspace
from tests.contract.test_runtime_contract import node_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.node]


def workspace(workspace_id: str, code: str = "return parameters;") -> Workspace:
    return Workspace(workspace_id, {"f": Function(code, Language.NODEJS)})


class Factory:
    """Makes NodeRuntimes and remembers which workspace asked for each."""

    def __init__(self, **overrides: Any) -> None:
        self.overrides = overrides
        self.made: list[tuple[str, NodeRuntime]] = []

    def __call__(self, workspace_id: str) -> NodeRuntime:
        runtime = node_runtime(max_workers=1, **self.overrides)
        self.made.append((workspace_id, runtime))
        return runtime


def dedicated(factory: Callable[[str], NodeRuntime], **overrides: Any) -> DedicatedRuntime:
    settings: dict[str, Any] = {"language": Language.NODEJS, "max_hosts": 50, "idle_timeout_s": 3600}
    return DedicatedRuntime(factory, **{**settings, **overrides})


def pid_of(runtime: DedicatedRuntime, workspace_id: str) -> int:
    own = runtime.runtime_of(workspace_id)
    assert isinstance(own, NodeRuntime) and own.host_pid is not None
    return own.host_pid


def gone(pid: int) -> bool:
    """The process has exited (a zombie not reaped yet counts: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(pid: int, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not gone(pid):
        assert time.monotonic() < deadline, f"host {pid} still runs after {within_s} s"
        await asyncio.sleep(0.02)


@pytest.fixture
async def factory() -> Factory:
    return Factory()


@pytest.fixture
async def runtime(factory: Factory) -> AsyncIterator[DedicatedRuntime]:
    runtime = dedicated(factory)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


async def test_each_workspace_runs_in_a_host_process_of_its_own(
    runtime: DedicatedRuntime, factory: Factory
) -> None:
    for workspace_id in ("a", "b"):
        outcome = await runtime.run(workspace(workspace_id), "f", {"who": workspace_id})
        assert outcome.status is Status.SUCCEEDED and outcome.result == {"who": workspace_id}
    assert [workspace_id for workspace_id, _ in factory.made] == ["a", "b"]
    assert pid_of(runtime, "a") != pid_of(runtime, "b")
    assert runtime.health()["hosts"] == 2
    await runtime.run(workspace("a"), "f", {})
    assert len(factory.made) == 2  # a second run reuses the workspace's host


async def test_concurrent_first_runs_of_a_workspace_start_one_host(
    runtime: DedicatedRuntime, factory: Factory
) -> None:
    outcomes = await asyncio.gather(*(runtime.run(workspace("a"), "f", {"n": n}) for n in range(5)))
    assert [outcome.result for outcome in outcomes] == [{"n": n} for n in range(5)]
    assert [workspace_id for workspace_id, _ in factory.made] == ["a"]


async def test_evict_closes_the_workspaces_host_and_its_next_run_starts_a_fresh_one(
    runtime: DedicatedRuntime,
) -> None:
    await runtime.run(workspace("a", "cache.n = (cache.n ?? 0) + 1; return cache.n;"), "f", {})
    first = pid_of(runtime, "a")
    await runtime.evict("a")
    assert gone(first)
    assert runtime.health()["hosts"] == 0
    outcome = await runtime.run(workspace("a", "cache.n = (cache.n ?? 0) + 1; return cache.n;"), "f", {})
    assert outcome.result == 1  # the cache went with the old host
    assert pid_of(runtime, "a") != first


async def test_the_least_recently_used_host_is_closed_over_the_limit(factory: Factory) -> None:
    runtime = dedicated(factory, max_hosts=2)
    await runtime.start()
    try:
        for workspace_id in ("a", "b"):
            await runtime.run(workspace(workspace_id), "f", {})
        pid_a, pid_b = pid_of(runtime, "a"), pid_of(runtime, "b")
        await runtime.run(workspace("a"), "f", {})  # b is now the least recently used
        await runtime.run(workspace("c"), "f", {})
        await wait_gone(pid_b)
        assert runtime.runtime_of("b") is None and not gone(pid_a)
        assert runtime.health()["hosts"] == 2
    finally:
        await runtime.aclose()


async def test_an_idle_host_is_closed(factory: Factory) -> None:
    runtime = dedicated(factory, idle_timeout_s=0.2)
    await runtime.start()
    try:
        await runtime.run(workspace("a"), "f", {})
        pid = pid_of(runtime, "a")
        await wait_gone(pid, within_s=3.0)
        assert runtime.health()["hosts"] == 0
    finally:
        await runtime.aclose()


async def test_a_host_in_use_is_not_closed_by_the_limit(factory: Factory) -> None:
    runtime = dedicated(factory, max_hosts=1)
    await runtime.start()
    try:
        slow = asyncio.create_task(
            runtime.run(workspace("a", "await new Promise((r) => setTimeout(r, 300)); return 'a';"), "f", {})
        )
        await asyncio.sleep(0.1)
        assert (await runtime.run(workspace("b"), "f", {"b": 1})).result == {"b": 1}
        assert (await slow).result == "a"  # a's host outlived the limit while its run was in flight
    finally:
        await runtime.aclose()


async def test_aclose_stops_every_host(factory: Factory) -> None:
    runtime = dedicated(factory)
    await runtime.start()
    for workspace_id in ("a", "b"):
        await runtime.run(workspace(workspace_id), "f", {})
    pids = [pid_of(runtime, "a"), pid_of(runtime, "b")]
    await runtime.aclose()
    assert all(gone(pid) for pid in pids)
    assert runtime.health()["status"] == "stopped"
    with pytest.raises(Unavailable):
        await runtime.run(workspace("a"), "f", {})


async def test_a_host_that_cannot_start_is_unavailable_and_tried_again_next_run() -> None:
    factory = Factory(node_binary="no-such-node-binary")
    runtime = dedicated(factory)
    await runtime.start()
    try:
        for _ in range(2):
            with pytest.raises(Unavailable, match="no-such-node-binary"):
                await runtime.run(workspace("a"), "f", {})
        assert len(factory.made) == 2 and runtime.health()["hosts"] == 0
    finally:
        await runtime.aclose()


async def test_saves_are_checked_by_the_shared_checker_without_starting_a_host(factory: Factory) -> None:
    checker = node_runtime(max_workers=1, packages_root=None)
    runtime = dedicated(factory, checker=checker)
    await runtime.start()
    try:
        assert await runtime.prepare(workspace("a"))
        with pytest.raises(CompileError):
            await runtime.prepare(workspace("a", "return 1 +;"))
        assert factory.made == [] and runtime.health()["checker"]["status"] == "ok"
    finally:
        await runtime.aclose()
    assert checker.health()["status"] == "stopped"


async def test_health_is_the_checkers_when_saves_cannot_be_checked(factory: Factory) -> None:
    runtime = dedicated(factory, checker=node_runtime(node_binary="no-such-node-binary"))
    await runtime.start()
    try:
        health = runtime.health()
        assert health["status"] == "unavailable" and "no-such-node-binary" in str(health["checker"])
    finally:
        await runtime.aclose()


async def test_without_a_checker_a_save_is_checked_on_the_workspaces_own_host(
    runtime: DedicatedRuntime, factory: Factory
) -> None:
    with pytest.raises(CompileError):
        await runtime.prepare(workspace("a", "return 1 +;"))
    assert await runtime.prepare(workspace("a"))
    assert [workspace_id for workspace_id, _ in factory.made] == ["a"]
