"""Which Python runs the kernels, and how: subinterpreters on 3.12+, a kernel process per workspace on 3.11,
what /sys/healthcheck says about it, and packages with compiled parts on a 3.12+ kernel."""

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.python.runtime import PythonRuntime
from domain.model import Function, Language, Status, Workspace
from tests.e2e.kernel_packages import installed_for, newest_subinterpreter_python
from tests.e2e.serving import SERVE, serving
from tests.python.kernels import python_runtime

pytestmark = [pytest.mark.kernel]


def workspace(workspace_id: str, code: str = "return parameters") -> Workspace:
    return Workspace(workspace_id, {"f": Function(code, Language.PYTHON)})


@pytest.fixture
async def own_python() -> AsyncIterator[PythonRuntime]:
    runtime = python_runtime(python_binary=sys.executable, pool_size=2)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.mark.anyio
@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the service's own Python runs subinterpreters")
async def test_on_python_3_11_each_workspace_gets_a_kernel_process_of_its_own(
    own_python: PythonRuntime,
) -> None:
    for workspace_id in ("a", "b"):
        outcome = await own_python.run(workspace(workspace_id), "f", {"who": workspace_id})
        assert outcome.status is Status.SUCCEEDED and outcome.result == {"who": workspace_id}
    pids = {own_python.kernel_of("a"), own_python.kernel_of("b")}
    assert len(pids) == 2 and not pids & set(own_python.kernel_pids)
    assert len(own_python.kernel_pids) == 1  # the pool only compiles and inspects
    health = own_python.health()
    assert health["kernels"] == "process per workspace"
    assert health["python"] == ".".join(map(str, sys.version_info[:3]))
    assert health["binary"] == sys.executable
    assert "PYTHON_KERNEL_BINARY set" in str(health["why"])


@pytest.mark.anyio
async def test_on_python_3_12_or_newer_workspaces_share_a_kernel_in_subinterpreters() -> None:
    chosen = newest_subinterpreter_python()
    runtime = python_runtime(pool_size=1)
    await runtime.start()
    try:
        for workspace_id in ("a", "b"):
            outcome = await runtime.run(workspace(workspace_id), "f", {"n": 1})
            assert outcome.status is Status.SUCCEEDED and outcome.result == {"n": 1}, outcome.error
        assert runtime.kernel_of("a") == runtime.kernel_of("b") in runtime.kernel_pids
        health = dict(runtime.health())
        assert health | chosen.health() == health
        assert "the newest CPython found" in str(runtime.health()["why"])
    finally:
        await runtime.aclose()


@pytest.mark.slow
@pytest.mark.anyio
async def test_numpy_runs_on_a_3_12_kernel_from_packages_its_own_pip_installed(
    pytestconfig: pytest.Config,
) -> None:
    chosen = newest_subinterpreter_python()
    packages = await installed_for(pytestconfig, chosen, ["numpy"])
    runtime = python_runtime(packages_dir=packages, pool_size=1, timeout_ms=20_000)
    await runtime.start()
    try:
        code = "import numpy as np\nreturn [np.__version__, (np.arange(6).reshape(2, 3) * 2).sum(axis=0)]"
        outcome = await runtime.run(workspace("np", code), "f", {})
        assert outcome.status is Status.SUCCEEDED, outcome.error
        version, sums = outcome.result
        assert sums == [6, 10, 14]
        assert (packages / f"numpy-{version}.dist-info").is_dir()  # its own, not the service venv's
    finally:
        await runtime.aclose()


def test_the_healthcheck_says_which_kernels_run_and_why(tmp_path: Path) -> None:
    with serving(tmp_path, PYTHON_KERNEL_BINARY=sys.executable) as url:
        python = httpx.get(f"{url}/sys/healthcheck").json()["runtimes"]["python"]
    expected = "subinterpreters" if sys.version_info >= (3, 12) else "process per workspace"
    assert python["kernels"] == expected
    assert python["binary"] == sys.executable
    assert python["why"].startswith(f"PYTHON_KERNEL_BINARY set ({python['python']} at {sys.executable})")


def test_an_unusable_kernel_binary_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHON_KERNEL_BINARY": str(tmp_path / "python9")}
    env["FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH"] = str(tmp_path / "data")
    done = subprocess.run([sys.executable, "-c", SERVE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: PYTHON_KERNEL_BINARY='{tmp_path / 'python9'}': no such executable")


def test_by_default_the_newest_python_runs_walled_kernels(tmp_path: Path) -> None:
    chosen = newest_subinterpreter_python()
    with serving(tmp_path) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = {"functions": {"f": {"language": "python", "code": "return 'hi'"}}}
        assert client.post("/v2/functions/w", json=body).status_code == 200
        assert client.post("/v2/functions/w/run/f", json={}).json()["result"] == "hi"
        python = client.get("/sys/healthcheck").json()["runtimes"]["python"]
    assert python | chosen.health() == python
