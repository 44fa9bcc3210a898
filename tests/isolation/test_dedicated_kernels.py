"""PythonRuntime(dedicated_kernels=True): every workspace in a kernel process of its own."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.hosts.process import HostProcess
from adapters.python.runtime import PythonRuntime
from domain.model import Function, Language, Status, Workspace
from tests.isolation.test_dedicated_runtime import gone, wait_gone
from tests.python.kernels import kernel, python_runtime

pytestmark = [pytest.mark.anyio, kernel]


def workspace(workspace_id: str, code: str = "return parameters") -> Workspace:
    return Workspace(workspace_id, {"f": Function(code, Language.PYTHON)})


@pytest.fixture
async def runtime() -> AsyncIterator[PythonRuntime]:
    runtime = python_runtime(dedicated_kernels=True, pool_size=4)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


def kernel_pid(runtime: PythonRuntime, workspace_id: str) -> int:
    pid = runtime.kernel_of(workspace_id)
    assert pid is not None
    return pid


async def test_each_workspace_gets_a_kernel_of_its_own_outside_the_pool(runtime: PythonRuntime) -> None:
    for workspace_id in ("a", "b"):
        outcome = await runtime.run(workspace(workspace_id), "f", {"who": workspace_id})
        assert outcome.status is Status.SUCCEEDED and outcome.result == {"who": workspace_id}
    pids = {kernel_pid(runtime, "a"), kernel_pid(runtime, "b")}
    assert len(pids) == 2 and not pids & set(runtime.kernel_pids)
    assert len(runtime.kernel_pids) == 1  # the pool only compiles, so one kernel is enough


async def test_concurrent_first_runs_of_a_workspace_launch_one_kernel(runtime: PythonRuntime) -> None:
    launched: list[bool] = []
    launch = runtime.launcher.launch

    async def counting_launch(dedicated: bool) -> HostProcess:
        launched.append(dedicated)
        return await launch(dedicated)

    runtime.launcher.launch = counting_launch  # type: ignore[method-assign]
    outcomes = await asyncio.gather(*(runtime.run(workspace("a"), "f", {"n": n}) for n in range(4)))
    assert [outcome.result for outcome in outcomes] == [{"n": n} for n in range(4)]
    assert launched == [True]


async def test_evict_stops_the_workspaces_kernel(runtime: PythonRuntime) -> None:
    await runtime.run(workspace("a"), "f", {})
    pid = kernel_pid(runtime, "a")
    await runtime.evict("a")
    await wait_gone(pid)
    assert (await runtime.run(workspace("a"), "f", {"again": 1})).result == {"again": 1}
    assert kernel_pid(runtime, "a") != pid and gone(pid)
