"""Kernels over their protocol: pool mode only on 3.12+, and the sandbox out of reach of user code."""

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel.sandbox_modules import KERNEL, KernelProcess, kernel_config, pool_python

pytestmark = pytest.mark.kernel
REACHING_FOR_THE_SANDBOX = {
    "sandbox": "import sandbox",
    "entry": "import sandbox.entry",
    "checks": "import checks",
    "kernel": "import kernel",
    "hosting": "from hosting import interpreters",
    "by_name": "import importlib\nreturn str(importlib.import_module('sandbox.entry'))",
}


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="this Python has a GIL per interpreter")
def test_pool_mode_refuses_to_start_before_3_12() -> None:
    done = subprocess.run(
        [sys.executable, "-I", str(KERNEL), kernel_config("pool")], capture_output=True, timeout=30
    )
    assert done.returncode != 0 and done.stdout == b""  # no `ready`
    version = ".".join(map(str, sys.version_info[:3]))
    assert f"pool mode needs CPython 3.12+ (a GIL per interpreter); this is {version}" in done.stderr.decode()


def kernels() -> list[Any]:
    found = pool_python()
    skip = pytest.mark.skip(reason="no CPython 3.12+ here (looked at this Python, ~/.pyenv/versions)")
    pool = pytest.param((found or "", "pool"), id="pool", marks=[] if found else [skip])
    return [pytest.param((sys.executable, "main"), id="main"), pool]


@pytest.fixture(params=kernels())
def kernel(request: pytest.FixtureRequest) -> Iterator[KernelProcess]:
    python, mode = request.param
    process = KernelProcess(python, mode)
    assert process.read()["type"] == "ready"
    yield process
    process.close()


def test_user_code_cannot_import_the_sandbox(kernel: KernelProcess) -> None:
    kernel.load("w", **REACHING_FOR_THE_SANDBOX)
    for name in REACHING_FOR_THE_SANDBOX:
        answer = kernel.run("w", name)
        assert answer["status"] == "failed", (name, answer)
        assert answer["error"]["name"] in ("ImportError", "ModuleNotFoundError"), (name, answer)


def test_runs_answer_and_a_workspace_can_be_replaced(kernel: KernelProcess) -> None:
    kernel.load("w", hello="print('hi')\nreturn 'hello ' + parameters['name']")
    first = kernel.run("w", "hello", name="x")
    assert first["status"] == "succeeded" and first["result"] == "hello x" and first["host"]["cold"]
    assert first["logs"][0]["message"] == "hi"
    assert not kernel.run("w", "hello", name="y")["host"]["cold"]
    # The old interpreter closes while the new one runs (3.12 used to hang closing one).
    kernel.load("w", hello="cache['x'] = (i for i in range(3)); return 2")
    assert kernel.run("w", "hello")["result"] == 2
    kernel.send({"type": "evict", "workspace": "w"})
    kernel.load("v", hello="return 3")
    assert kernel.run("v", "hello")["result"] == 3


def test_pool_mode_runs_workspaces_in_subinterpreters_of_their_own() -> None:
    python = pool_python()
    if python is None:
        pytest.skip("no CPython 3.12+ here (looked at this Python, ~/.pyenv/versions)")
    kernel = KernelProcess(python, "pool")
    try:
        assert kernel.read()["type"] == "ready"
        for workspace in ("a", "b"):
            kernel.load(workspace, keep="cache['n'] = cache.get('n', 0) + 1\nreturn cache['n']")
        assert [kernel.run(w, "keep")["result"] for w in ("a", "a", "b")] == [1, 2, 1]
        kernel.load("c", where="import math\nreturn math.sqrt(16)")
        assert kernel.run("c", "where")["result"] == 4.0
    finally:
        kernel.close()


def resident_mib(kernel: KernelProcess) -> float:
    with open(f"/proc/{kernel.process.pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_a_new_version_of_a_workspace_takes_over_its_interpreter_with_fresh_state() -> None:
    """CPython 3.12+ keeps ~4.5 MiB of every subinterpreter it closes: a save (evict, then load) must
    not build a new one. The new version starts with an empty `cache` and globals all the same, and
    no other workspace ever gets that interpreter."""
    python = pool_python()
    if python is None:
        pytest.skip("no CPython 3.12+ here (looked at this Python, ~/.pyenv/versions)")
    kernel = KernelProcess(python, "pool")
    try:
        assert kernel.read()["type"] == "ready"
        counter = (
            "global calls\ntry:\n    calls += 1\nexcept NameError:\n    calls = 1\n"
            "cache['n'] = cache.get('n', 0) + 1\n"
        )
        for version in range(3):  # the memory of a first few interpreters settles
            kernel.send({"type": "evict", "workspace": "w"})
            kernel.load("w", count=counter + f"return [{version}, cache['n'], calls]")
            assert kernel.run("w", "count")["result"] == [version, 1, 1]
        before = resident_mib(kernel)
        for version in range(3, 43):
            kernel.send({"type": "evict", "workspace": "w"})
            kernel.load("w", count=counter + f"return [{version}, cache['n'], calls]")
            assert kernel.run("w", "count")["result"] == [version, 1, 1]  # nothing of the last version
        grown = resident_mib(kernel) - before
        assert grown < 40, f"40 versions grew the kernel by {grown:.0f} MiB: new interpreters each time"
        kernel.load(
            "other", peek="try:\n    return [cache.get('n'), calls]\nexcept NameError:\n    return [None]"
        )
        assert kernel.run("other", "peek")["result"] == [None]
    finally:
        kernel.close()
