"""PYTHON_PACKAGES_AUTO_INSTALL: pip installs the listed requirements into PYTHON_PACKAGES_DIR at start-up."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from adapters.python.interpreter import FoundPython, ask_version

PIP_TIMEOUT_S = 600.0
# What pip may see of the service's environment: its own settings (PIP_INDEX_URL, ...) and the basics.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


class PackageInstallError(Exception):
    """PYTHON_PACKAGES_AUTO_INSTALL could not be installed: the service does not start."""


async def install_packages(
    python_binary: str, target: Path, requirements: Sequence[str], options: Sequence[str] = ()
) -> None:
    """`python -m pip install --target <target> <requirements>` with the kernel's Python (compiled wheels
    are built for one Python version); PackageInstallError with pip's own words.

    A folder that already holds exactly these requirements, for this Python version, is left as it is: a
    restart does not run pip again (remove the folder, or change the list, to reinstall).
    """
    target.mkdir(parents=True, exist_ok=True)
    marker = target / ".installed-requirements"
    found = await asyncio.to_thread(ask_version, python_binary)
    version = f"{found.version[0]}.{found.version[1]}" if isinstance(found, FoundPython) else "?"
    wanted = f"# CPython {version}\n" + "\n".join(requirements)
    if marker.is_file() and marker.read_text() == wanted:
        return
    pip = await asyncio.to_thread(pip_for, python_binary)
    argv = [*pip, "install", "--disable-pip-version-check", "--no-input", "--upgrade"]
    argv += ["--target", str(target), *options, *requirements]
    env = {k: v for k, v in os.environ.items() if k in PASSED_THROUGH or k.startswith("PIP_")}
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), PIP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        raise PackageInstallError(
            f"PYTHON_PACKAGES_AUTO_INSTALL: pip did not finish within {PIP_TIMEOUT_S:.0f} s"
        ) from None
    if process.returncode != 0:
        tail = "\n".join(output.decode(errors="replace").strip().splitlines()[-15:])
        raise PackageInstallError(
            f"PYTHON_PACKAGES_AUTO_INSTALL: pip could not install {', '.join(requirements)} "
            f"into {target} (exit code {process.returncode}):\n{tail}"
        )
    marker.write_text(wanted)


def pip_for(python_binary: str) -> list[str]:
    """The Python's own pip, or else the service's pip driving that Python (`pip --python`): a Python
    built without ensurepip has none, and its packages must still be resolved for its own version."""
    has_pip = subprocess.run([python_binary, "-I", "-c", "import pip"], capture_output=True, timeout=30)
    if has_pip.returncode == 0 or python_binary == sys.executable or find_spec("pip") is None:
        return [python_binary, "-m", "pip"]
    return [sys.executable, "-m", "pip", "--python", python_binary]


def installed_modules(folder: Path) -> set[str]:
    """Top-level importable names in a pip --target folder (they join the import whitelist)."""
    names = set()
    for entry in folder.iterdir():
        if entry.name.endswith((".dist-info", ".egg-info", ".data")) or entry.name.startswith((".", "_")):
            continue
        if entry.is_dir() and entry.name != "bin":
            names.add(entry.name)
        elif entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.suffix in (".so", ".pyd"):
            names.add(entry.name.partition(".")[0])
    return names
