"""Packages for a kernel on Python 3.12+, installed by that Python's own pip (compiled wheels are built per
Python version: a 3.13 kernel cannot load the service venv's 3.11 numpy)."""

from collections.abc import Sequence
from pathlib import Path

import pytest

from adapters.python.interpreter import KernelPython, choose_kernel_python
from adapters.python.packages import PackageInstallError, install_packages

# What pip says when it cannot reach the index (no network here, a proxy missing).
UNREACHABLE = ("connection", "resolve", "network", "proxy", "no matching distribution", "timed out")


def newest_subinterpreter_python() -> KernelPython:
    """The Python the service would choose, when it runs subinterpreters; else the test is skipped."""
    chosen = choose_kernel_python(None)
    if not chosen.subinterpreters:
        pytest.skip(f"no CPython 3.12+ here: {chosen.why}")
    return chosen


async def installed_for(config: pytest.Config, kernel: KernelPython, requirements: Sequence[str]) -> Path:
    """A packages dir for `kernel` holding `requirements`, kept in pytest's cache between sessions."""
    version = kernel.health()["python"]
    folder = config.cache.mkdir(f"kernel-packages-{version}-{'-'.join(sorted(requirements))}")
    try:
        await install_packages(kernel.binary, folder, requirements)
    except PackageInstallError as exc:
        if any(word in str(exc).lower() for word in UNREACHABLE):
            pytest.skip(f"the package index is unreachable: {str(exc).splitlines()[-1]}")
        raise
    return folder
