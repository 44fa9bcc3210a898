"""Python runtimes for tests: the service's own Python, and any Python 3.12+ found on this machine."""

import functools
import glob
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from adapters.python.runtime import PythonRuntime
from entrypoints.settings import PYTHON_BUILTINS, PYTHON_PACKAGES

kernel = pytest.mark.kernel
# The subinterpreter module each version needs (the backport is lent to the kernel by the adapter).
PROBE = "import sys; __import__('_interpreters' if sys.version_info >= (3, 13) else '_xxsubinterpreters')"


def python_runtime(**overrides: Any) -> PythonRuntime:
    settings: dict[str, Any] = {
        "timeout_ms": 1000,
        "pool_size": 2,
        "max_memory_mb": 512,
        "builtin_modules": PYTHON_BUILTINS,
        "packages_whitelist": PYTHON_PACKAGES,
    }
    return PythonRuntime(**{**settings, **overrides})


def _works(binary: str) -> bool:
    try:
        return subprocess.run([binary, "-c", PROBE], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.cache
def other_pythons() -> dict[str, str]:
    """`python3.12` / `python3.13` that really run (pyenv shims may exist and fail), by version."""
    found: dict[str, str] = {}
    for version in ("3.12", "3.13"):
        if sys.version_info[:2] == tuple(int(p) for p in version.split(".")):
            continue
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        candidates = [
            shutil.which(f"python{version}"),
            *sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}")),
        ]
        for binary in candidates:
            if binary and _works(binary):
                found[version] = binary
                break
    return found


def _other_pythons_or_none() -> dict[str, str | None]:
    found = other_pythons()
    return {
        version: found.get(version)
        for version in ("3.12", "3.13")
        if sys.version_info[:2] != (3, int(version[2:]))
    }


OTHER_PYTHONS = _other_pythons_or_none()  # version -> binary, or None (its kit is skipped)


def kernel_pythons() -> list[Any]:
    """The service's own Python (on 3.11: a kernel process per workspace), and any 3.12/3.13 found."""
    params = [pytest.param(sys.executable, id=f"{sys.version_info[0]}.{sys.version_info[1]}")]
    for version, binary in OTHER_PYTHONS.items():
        marks = [] if binary else [pytest.mark.skip(reason=f"no working python{version} here")]
        params.append(pytest.param(binary or "", id=version, marks=marks))
    return params
