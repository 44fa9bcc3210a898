"""Each wall, attacked directly: the launcher starts a probe program in a host's place."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.hosts import walls as walls_module
from adapters.hosts.walls import LAUNCHER, STRICT, HostPlan, Wall, WallMissing, Walls, probe
from tests.walls.conftest import SYSTEM_PYTHON, run_probe

OFFERED = probe()
needs = {name: pytest.mark.skipif(not OFFERED[name].on, reason=OFFERED[name].detail) for name in OFFERED}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One probe run for the whole module: it tries every attack and reports."""
    import shutil
    import tempfile

    inside = Path(tempfile.mkdtemp(prefix="walls-inside-"))
    inside.chmod(0o755)
    (inside / "allowed.txt").write_text("fine")
    (inside / "allowed.txt").chmod(0o644)
    outside = Path(tempfile.mkdtemp(prefix="walls-outside-")) / "secret.txt"
    outside.parent.chmod(0o755)
    outside.write_text("secret")
    outside.chmod(0o644)  # readable by anyone as far as the file modes go: only Landlock stands in the way
    try:
        report = run_probe(Walls(), inside, outside)
        report["inside_after"] = sorted(os.listdir(inside))
        report["outside_mode"] = oct(inside.stat().st_mode & 0o777)
        report["scratch_left"] = os.path.exists(report["scratch"])
        return report
    finally:
        shutil.rmtree(inside, ignore_errors=True)
        shutil.rmtree(outside.parent, ignore_errors=True)


@needs["landlock"]
def test_landlock_allows_the_planned_reads_and_refuses_the_rest(attacked: dict[str, Any]) -> None:
    assert attacked["read_inside"] == "allowed"
    assert attacked["read_outside"].startswith("refused")
    assert attacked["write_inside"].startswith("refused") and attacked["inside_after"] == ["allowed.txt"]
    assert attacked["write_tmp"].startswith("refused")


@needs["landlock"]
def test_the_private_scratch_folder_is_writable_and_removed_afterwards(attacked: dict[str, Any]) -> None:
    assert attacked["scratch"].startswith("/tmp/functions-host-")
    assert attacked["write_scratch"] == "allowed"
    assert not attacked["scratch_left"]


@needs["seccomp"]
def test_seccomp_refuses_new_processes_exec_ptrace_and_other_processes(attacked: dict[str, Any]) -> None:
    for attack in ("fork", "exec", "ptrace", "signal_parent", "chmod", "raise_limit"):
        assert attacked[attack].startswith("refused"), attack
    assert attacked["outside_mode"] == "0o755"  # the chmod did not happen


def test_the_parents_environment_is_out_of_reach_and_its_own_is_small(attacked: dict[str, Any]) -> None:
    assert attacked["read_parent_environ"].startswith("refused")
    variables = dict(line.split("=", 1) for line in attacked["own_environ"].split("\0") if line)
    assert set(variables) == {"LANG", "TMPDIR"}


def test_resource_limits_and_no_new_privs(attacked: dict[str, Any]) -> None:
    assert attacked["limits"] == {
        "open_files": 1024,
        "file_size": 64 * 1024 * 1024,  # a scratch folder: files up to 64 MiB
        "core": 0,
        "address_space": 1024 * 1024 * 1024,
    }
    assert attacked["no_new_privs"] == ["NoNewPrivs:\t1"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the user switch is for a service that runs as root")
def test_a_root_service_runs_the_host_as_nobody(attacked: dict[str, Any]) -> None:
    assert attacked["uid"] == 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="for a service that runs as root")
def test_a_root_host_that_cannot_be_nobody_keeps_no_capability_outside(open_folder: Path) -> None:
    (open_folder / "allowed.txt").write_text("fine")
    (open_folder / "allowed.txt").chmod(0o644)
    walls = Walls(offered={**OFFERED, "user": Wall(False, "simulated: no unprivileged user")})
    report = run_probe(walls, open_folder, open_folder / "allowed.txt")
    assert report["uid"] == 0 and report["uid_map"] == ["0", "0", "1"]  # root in a namespace of its own
    assert report["raise_limit"].startswith("refused")  # CAP_SYS_RESOURCE is gone
    assert report["read_parent_environ"].startswith("refused")
    hosts: Any = walls.report()["hosts"]
    assert hosts["probe"]["capabilities"]["on"] is True


def test_without_a_scratch_folder_no_file_may_grow(open_folder: Path) -> None:
    (open_folder / "allowed.txt").write_text("fine")
    (open_folder / "allowed.txt").chmod(0o644)
    report = run_probe(Walls(), open_folder, open_folder / "allowed.txt", scratch=False)
    assert report["limits"]["file_size"] == 0
    assert report["write_scratch"].startswith("refused")


def test_strict_refuses_a_host_with_a_wall_missing(open_folder: Path) -> None:
    offered = {**OFFERED, "landlock": Wall(False, "simulated: no Landlock here")}
    walls = Walls(STRICT, offered=offered)
    with pytest.raises(WallMissing, match="landlock: simulated: no Landlock here"):
        run_probe(walls, open_folder, open_folder)
    assert walls.report()["hosts"]["probe"]["landlock"] == {
        "on": False,
        "reason": "simulated: no Landlock here",
    }


def test_standard_starts_without_the_missing_wall_and_says_so(open_folder: Path) -> None:
    (open_folder / "allowed.txt").write_text("fine")
    (open_folder / "allowed.txt").chmod(0o644)
    offered = {**OFFERED, "seccomp": Wall(False, "simulated: no libseccomp")}
    walls = Walls(offered=offered)
    report = run_probe(walls, open_folder, open_folder / "allowed.txt")
    assert report["fork"] == "allowed"  # the wall really is off: the launch followed the report
    hosts = walls.report()["hosts"]
    assert isinstance(hosts, dict)
    assert hosts["probe"]["seccomp"] == {"on": False, "reason": "simulated: no libseccomp"}
    assert walls.report()["mode"] == "standard"


def test_a_planned_wall_that_cannot_be_raised_stops_the_launch(open_folder: Path) -> None:
    marker = open_folder / "host-ran"
    plan = {"landlock": {"read": [str(open_folder / "missing")], "execute": [], "write": []}}
    done = subprocess.run(
        [sys.executable, "-I", str(LAUNCHER), json.dumps(plan), "/usr/bin/touch", str(marker)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, marker.exists()) == (126, False)
    assert done.stderr.startswith("launcher: FileNotFoundError")


def test_the_python_api_health_carries_the_kernels_walls(open_folder: Path) -> None:
    from attrs import define
    from starlette.testclient import TestClient

    from entrypoints.http.python_api import create_python_api
    from tests.fakes import ScriptedRuntime

    @define
    class WalledRuntime(ScriptedRuntime):
        walls: Walls | None = None  # as PythonRuntime carries them

    walls = Walls(offered={**OFFERED, "user": Wall(False, "simulated")})
    walls.launch(HostPlan("python", SYSTEM_PYTHON, [str(open_folder)]), [SYSTEM_PYTHON]).cleanup()
    runtime = WalledRuntime(walls=walls)
    with TestClient(create_python_api(runtime)) as client:
        health = client.get("/sys/healthcheck").json()
    assert health["walls"]["hosts"]["python"]["user"] == {"on": False, "reason": "simulated"}


def test_scratch_folders_of_a_service_that_died_are_swept() -> None:
    import tempfile

    from adapters.hosts.walls import SCRATCH_PREFIX

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{dead.stdout.strip()}-"))
    mine = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        Walls()
        assert not stale.exists() and mine.exists()
    finally:
        mine.rmdir()


@pytest.mark.parametrize(("held", "on"), [(0, True), (0x80000, False)])
def test_a_service_that_is_not_root_is_judged_by_the_capabilities_it_holds(
    monkeypatch: pytest.MonkeyPatch, open_folder: Path, held: int, on: bool
) -> None:
    """Without user namespaces (the wall offered off, as on a node that disables them), a service that is
    not root still has its capabilities wall on when it holds none (a container's non-root user), and off,
    saying so, when it holds some (SYS_PTRACE added as an ambient capability)."""
    monkeypatch.setattr(os, "geteuid", lambda: 10001)
    monkeypatch.setattr(walls_module, "_effective_capabilities", lambda: held)
    offered = {**OFFERED, "capabilities": Wall(False, "the kernel offers no user namespaces")}
    walls = Walls(offered=offered)
    walls.launch(HostPlan("probe", SYSTEM_PYTHON, [str(open_folder)]), [SYSTEM_PYTHON]).cleanup()
    capabilities = walls.report()["hosts"]["probe"]["capabilities"]
    assert capabilities["on"] is on, capabilities
    if not on:
        assert "holds capabilities 0x80000" in capabilities["reason"]
