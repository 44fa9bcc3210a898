"""Folders every user can reach (pytest's own tmp folder is root's alone), and the probe's launch."""

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.hosts.walls import HostPlan, Launch, Walls

PROBE = Path(__file__).resolve().parent / "probe.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # reachable by the unprivileged user, unlike the service's own Python


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder under /tmp that the unprivileged user may read (mode 755)."""
    folder = Path(tempfile.mkdtemp(prefix="walls-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_probe(walls: Walls, inside: Path, outside: Path, *, scratch: bool = True) -> dict[str, Any]:
    """The probe started as a host would be: through the launcher, with a small environment."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON} to run the probe with")
    folder = str(PROBE.parent)
    plan = HostPlan("probe", SYSTEM_PYTHON, [folder, str(inside)], address_space_mb=1024, scratch=scratch)
    launch = walls.launch(
        plan, [SYSTEM_PYTHON, "-I", str(PROBE), str(inside), str(outside), str(os.getpid())]
    )
    done = run_launched(launch)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run_launched(launch: Launch, timeout_s: float = 30) -> "subprocess.CompletedProcess[str]":
    """Start a launch as the runtimes do: the launcher inherits the egress channel, the guard adopts it."""
    try:
        with subprocess.Popen(
            launch.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"LANG": "C.UTF-8"},
            pass_fds=launch.pass_fds,
        ) as process:
            launch.started(process.pid)
            out, err = process.communicate(timeout=timeout_s)
            return subprocess.CompletedProcess(launch.argv, process.returncode, out, err)
    finally:
        launch.cleanup()
