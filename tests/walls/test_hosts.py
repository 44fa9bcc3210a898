"""The real hosts behind their walls: the Node host under the permission model, the Python kernels, the
health report, and FUNCTIONS_WALLS's two modes at service start."""

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers

from adapters.hosts.walls import STRICT, Wall, WallMissing, Walls, probe
from adapters.node.runtime import NodeRuntime, node_version
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.model import Language, Status
from entrypoints.container import build_container
from entrypoints.embed import open_service
from tests.python.kernels import python_runtime

pytestmark = pytest.mark.anyio
ATTACKS = {
    "write": "try { require('fs').writeFileSync('/tmp/walls-host-write', 'x'); return 'written' }"
    " catch (e) { return 'refused ' + e.code }",
    "spawn": "try { return String(require('child_process').execFileSync('/bin/true')) }"
    " catch (e) { return 'refused ' + e.code }",
    "read": "try { return require('fs').readFileSync('/etc/passwd', 'utf8') }"
    " catch (e) { return 'refused ' + e.code }",
    "fine": "return 6 * 7",
}


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.fixture
async def node(open_folder: Path) -> AsyncIterator[NodeRuntime]:
    runtime = NodeRuntime(
        timeout_ms=5000,
        max_workers=2,
        idle_timeout_s=60,
        max_old_generation_mb=64,
        builtin_modules=["fs", "child_process"],  # an operator's choice the walls must still hold against
        packages_root=open_folder,
        walls=Walls(),
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.aclose()


@pytest.mark.node
async def test_the_node_host_refuses_writes_child_processes_and_reads_outside(node: NodeRuntime) -> None:
    service = Workspaces(InMemoryStore(), {Language.NODEJS: node})
    await service.save(workspace_from_body("w", {"functions": {k: {"code": v} for k, v in ATTACKS.items()}}))
    results = {name: (await service.run("w", name)).result for name in ATTACKS}
    assert results["fine"] == 42
    for attack in ("write", "spawn", "read"):
        assert str(results[attack]).startswith("refused"), (attack, results[attack])
    assert not os.path.exists("/tmp/walls-host-write")


@pytest.mark.node
async def test_the_node_host_process_runs_with_every_wall(node: NodeRuntime) -> None:
    assert node.host_pid is not None
    status = status_of(node.host_pid)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    if os.geteuid() == 0:
        assert status["Uid"].split()[0] == "65534"
    environ = Path(f"/proc/{node.host_pid}/environ").read_text().split("\0")
    # No variable of the service's; the launcher's Python adds its locale (PEP 538), no more.
    assert {item.split("=")[0] for item in environ if item} <= {"LC_CTYPE"}
    walls = node.walls.report()["hosts"]["nodejs"] if node.walls else {}
    assert isinstance(walls, dict) and walls["permission_model"]["on"] is True


@pytest.mark.node
def test_node_s_permission_model_refuses_what_the_flags_do_not_grant(open_folder: Path) -> None:
    runtime = NodeRuntime(
        timeout_ms=1000,
        max_workers=1,
        idle_timeout_s=60,
        max_old_generation_mb=64,
        builtin_modules=[],
        packages_root=open_folder,
    )
    runtime._node_version = asyncio.run(node_version("node"))  # as start() finds it
    flags = runtime.permission_flags()
    probe_script = open_folder / "probe.mjs"
    probe_script.write_text(
        "import fs from 'node:fs'; import cp from 'node:child_process';\n"
        "const tryIt = (f) => { try { f(); return 'allowed' } catch (e) { return e.code } };\n"
        "console.log(JSON.stringify([tryIt(() => fs.writeFileSync(process.argv[2] + '/w', 'x')),"
        " tryIt(() => cp.execFileSync('/bin/true')), tryIt(() => fs.readFileSync('/etc/hostname'))]));\n"
    )
    done = subprocess.run(
        ["node", *flags, str(probe_script), str(open_folder)], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == '["ERR_ACCESS_DENIED","ERR_ACCESS_DENIED","ERR_ACCESS_DENIED"]', done.stderr
    assert "--allow-fs-write" not in " ".join(flags) and "--allow-child-process" not in flags


@pytest.mark.node
async def test_user_code_in_a_worker_meets_the_permission_model(node: NodeRuntime) -> None:
    service = Workspaces(InMemoryStore(), {Language.NODEJS: node})
    await service.save(workspace_from_body("w", {"functions": {"read": {"code": ATTACKS["read"]}}}))
    assert (await service.run("w", "read")).result == "refused ERR_ACCESS_DENIED"


@pytest.mark.kernel
async def test_python_kernels_run_with_every_wall_and_a_scratch_folder_of_their_own() -> None:
    runtime = python_runtime(pool_size=1, walls=Walls())
    await runtime.start()
    try:
        assert runtime.health()["status"] == "ok"
        pid = runtime.kernel_pids[0]
        status = status_of(pid)
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
        variables = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if item
        )
        assert "FUNCTIONS_API_KEY" not in variables and "PATH" not in variables
        scratch = Path(variables["TMPDIR"])
        assert scratch.is_dir() and scratch.stat().st_mode & 0o777 == 0o700
    finally:
        await runtime.aclose()
    assert not scratch.exists()


def _environ(storage: Path, **more: str) -> dict[str, str]:
    return {
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(storage),
        "PYTHON_PACKAGES_DIR": str(storage / "py"),
        "KERNEL_POOL_SIZE": "1",
        **more,
    }


@pytest.mark.node
@pytest.mark.kernel
async def test_the_healthcheck_lists_each_host_s_walls(open_folder: Path) -> None:
    async with open_service(_environ(open_folder, FUNCTIONS_API_KEY="secret-key")) as service:
        health: dict[str, Any] = service.health()
    walls = health["walls"]
    assert walls["mode"] == "standard"
    assert set(walls["hosts"]) == {"nodejs", "python"}
    for host in walls["hosts"].values():
        assert {"environment", "landlock", "seccomp", "no_new_privs", "limits", "user"} <= set(host)
        assert all(("detail" if wall["on"] else "reason") in wall for wall in host.values())
    assert walls["hosts"]["nodejs"]["landlock"] == {"on": True, "detail": probe()["landlock"].detail}


@pytest.mark.node
async def test_strict_refuses_to_start_when_a_wall_is_missing(open_folder: Path) -> None:
    container = build_container(_environ(open_folder, FUNCTIONS_WALLS="strict"))
    offered = {**probe(), "seccomp": Wall(False, "simulated: no libseccomp")}
    container.walls.override(providers.Object(Walls(STRICT, offered=offered)))
    with pytest.raises(Exception) as raised:  # the task group of the start wraps it
        async with open_service(container=container):
            pass
    assert (
        raised.group_contains(WallMissing, match="seccomp: simulated")
        if isinstance(raised.value, BaseExceptionGroup)
        else isinstance(raised.value, WallMissing)
    )


@pytest.mark.node
async def test_standard_starts_and_says_which_walls_are_off(open_folder: Path) -> None:
    container = build_container(_environ(open_folder))
    offered = {**probe(), "landlock": Wall(False, "simulated: no Landlock")}
    container.walls.override(providers.Object(Walls(offered=offered)))
    async with open_service(container=container) as service:
        await service.save("w", {"functions": {"f": {"code": "return 1"}}})
        assert (await service.run("w", "f")).status is Status.SUCCEEDED
        walls: Any = service.health()["walls"]
    assert walls["hosts"]["nodejs"]["landlock"] == {"on": False, "reason": "simulated: no Landlock"}
