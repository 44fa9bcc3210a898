"""Which CPython runs the Python kernels (PYTHON_KERNEL_BINARY, else the newest found), and how.

Subinterpreters with a GIL of their own need CPython 3.12+; with only 3.11, every workspace gets a kernel
process of its own instead. A candidate is asked its version once, and a 3.12+ one must also really build
and close a subinterpreter (with the lent backport on 3.12/3.13), so a broken Python is passed over with
its reason kept.
"""

import atexit
import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path

from attrs import frozen

from domain.model import Json

SETTING = "PYTHON_KERNEL_BINARY"
OLDEST = (3, 11)  # main-interpreter kernels
SUBINTERPRETERS = (3, 12)  # a GIL per interpreter (PEP 684)
PROBE_TIMEOUT_S = 20.0
# Names on PATH worth asking, newest first (a pyenv shim that has no such version fails its probe).
MINORS = range(20, 10, -1)
ASK_VERSION = (
    "import json, sys; print(json.dumps({'version': list(sys.version_info[:3]), "
    "'implementation': sys.implementation.name, 'executable': sys.executable, "
    "'prefixes': sorted({sys.prefix, sys.base_prefix})}))"
)
# Run as `python -I -c BUILD <lent folder or ''>`: what a pool kernel does first.
BUILD_INTERPRETER = (
    "import importlib, sys\n"
    "if sys.argv[1]: sys.path.insert(0, sys.argv[1])\n"
    "name = 'concurrent.interpreters' if sys.version_info >= (3, 14) else 'backports.interpreters'\n"
    "importlib.import_module(name).create().close()\n"
)


class KernelPythonError(Exception):
    """PYTHON_KERNEL_BINARY names no Python that can run the kernel: the service does not start."""


@frozen
class FoundPython:
    """A candidate's answer to ASK_VERSION."""

    binary: str  # its sys.executable: a pyenv shim's real binary, a venv's own python
    version: tuple[int, int, int]
    prefixes: tuple[str, ...]  # sys.prefix and sys.base_prefix: what the kernel must be able to read

    @property
    def own(self) -> bool:
        """The service's own interpreter: it sees (and can load) the service's installed packages."""
        return os.path.realpath(self.binary) == os.path.realpath(sys.executable) and set(self.prefixes) == {
            sys.prefix,
            sys.base_prefix,
        }

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@frozen
class KernelPython:
    """The chosen Python, whether its kernels hold workspaces in subinterpreters, and why."""

    found: FoundPython
    subinterpreters: bool
    why: str

    @property
    def binary(self) -> str:
        return self.found.binary

    @property
    def own(self) -> bool:
        return self.found.own

    @property
    def lent(self) -> list[str]:
        """Folders lent to a foreign Python (<3.14): only the pure-Python interpreters backport."""
        if self.own or self.found.version >= (3, 14):
            return []
        folder = lent_backport()
        return [folder] if folder else []

    def health(self) -> dict[str, Json]:
        return {
            "kernels": "subinterpreters" if self.subinterpreters else "process per workspace",
            "python": self.found.version_text,
            "binary": self.binary,
            "why": self.why,
        }


@functools.cache
def lent_backport() -> str | None:
    """A private folder holding just `backports/interpreters` (a link to the service's copy): a foreign
    Python must not see the rest of the service's site-packages, whose compiled wheels are not its own."""
    spec = find_spec("backports.interpreters")
    if spec is None or not spec.origin:
        return None
    folder = tempfile.mkdtemp(prefix="functions-lent-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (Path(folder) / "backports").mkdir()
    (Path(folder) / "backports" / "interpreters").symlink_to(Path(spec.origin).parent)
    return folder


def lent_originals() -> list[str]:
    """What the lent links point at (a walled kernel must be able to read them)."""
    spec = find_spec("backports.interpreters")
    return [str(Path(spec.origin).parent)] if spec is not None and spec.origin else []


@functools.cache
def ask_version(binary: str) -> FoundPython | str:
    """The candidate's version and prefixes, or why it gave none."""
    try:
        done = subprocess.run(
            [binary, "-I", "-c", ASK_VERSION], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"{binary} did not answer: {exc}"
    if not isinstance(answer, dict):
        return f"{binary} did not answer (exit code {done.returncode}): {last_line(done.stderr)}"
    if answer["implementation"] != "cpython":
        return f"{binary} is {answer['implementation']}, not CPython"
    major, minor, micro = answer["version"]
    return FoundPython(answer["executable"] or binary, (major, minor, micro), tuple(answer["prefixes"]))


@functools.cache
def cannot_build_interpreters(found: FoundPython) -> str | None:
    """Why a 3.12+ Python cannot build a subinterpreter as a pool kernel would, or None when it can."""
    lent = "" if found.own or found.version >= (3, 14) else (lent_backport() or "")
    try:
        done = subprocess.run(
            [found.binary, "-I", "-c", BUILD_INTERPRETER, lent],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else last_line(done.stderr) or f"exit code {done.returncode}"


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def candidates() -> list[str]:
    """Pythons worth asking: pythonX.Y on PATH, pyenv's versions, and the service's own."""
    names = [found for minor in MINORS if (found := shutil.which(f"python3.{minor}"))]
    for root in pyenv_roots():
        names += sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3")))
    names.append(sys.executable)
    return list(dict.fromkeys(names))


def pyenv_roots() -> list[str]:
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        with_root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        if with_root.returncode == 0 and with_root.stdout.strip():
            roots.append(with_root.stdout.strip())
    return list(dict.fromkeys(root for root in roots if os.path.isdir(root)))


@functools.cache
def choose_kernel_python(setting: str | None = None) -> KernelPython:
    """PYTHON_KERNEL_BINARY when set, else the newest CPython 3.12+ that builds subinterpreters, else the
    service's own Python (a kernel process per workspace)."""
    if setting:
        return chosen_by_setting(setting)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask_version, candidates()))
    # One entry per interpreter: a shim, a link and the binary itself answer alike.
    found = {(os.path.realpath(a.binary), a.prefixes): a for a in answers if isinstance(a, FoundPython)}
    # Newest first; at one version, the service's own (it sees the service's packages).
    ordered = sorted(found.values(), key=lambda f: (f.version, f.own), reverse=True)
    skipped: list[str] = []
    for candidate in ordered:
        if candidate.version < SUBINTERPRETERS:
            break
        why_not = cannot_build_interpreters(candidate)
        if why_not is None:
            where = f"{candidate.version_text} at {candidate.binary}"
            passed = f"; passed over: {'; '.join(skipped)}" if skipped else ""
            why = f"the newest CPython found ({where}); {SETTING} unset{passed}"
            return KernelPython(candidate, True, why)
        skipped.append(f"{candidate.version_text} at {candidate.binary} ({why_not})")
    own = ask_version(sys.executable)
    assert isinstance(own, FoundPython), own
    found_text = "no CPython 3.12+ that works found" if skipped else f"only CPython 3.{own.version[1]} found"
    why = f"{found_text}: subinterpreters with a GIL of their own need 3.12+; set {SETTING} to a newer Python"
    if skipped:
        why = f"{why} (passed over: {'; '.join(skipped)})"
    return KernelPython(own, False, why)


def chosen_by_setting(setting: str) -> KernelPython:
    binary = shutil.which(setting)
    if binary is None:
        raise KernelPythonError(f"{SETTING}={setting!r}: no such executable")
    found = ask_version(binary)
    if isinstance(found, str):
        raise KernelPythonError(f"{SETTING}={setting!r} is not a Python that runs: {found}")
    if found.version < OLDEST:
        raise KernelPythonError(
            f"{SETTING}={setting!r} is CPython {found.version_text}: the kernel needs CPython 3.11 or newer"
        )
    # Exactly the binary named: a venv's python sees that venv's packages.
    found = FoundPython(os.path.abspath(binary), found.version, found.prefixes)
    where = f"{found.version_text} at {found.binary}"
    if found.version < SUBINTERPRETERS:
        why = f"{SETTING} set ({where}): subinterpreters with a GIL of their own need 3.12+"
        return KernelPython(found, False, why)
    why_not = cannot_build_interpreters(found)
    if why_not is not None:
        why = f"{SETTING} set ({where}), but it cannot build subinterpreters: {why_not}"
        return KernelPython(found, False, why)
    return KernelPython(found, True, f"{SETTING} set ({where})")
