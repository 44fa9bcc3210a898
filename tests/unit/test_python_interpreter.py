"""Which CPython runs the kernels: PYTHON_KERNEL_BINARY, else the newest found that builds subinterpreters."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.python import interpreter
from adapters.python.interpreter import KernelPythonError, choose_kernel_python
from entrypoints.settings import load_settings

# Answers ASK_VERSION as CPython 3.19 would, and fails to build a subinterpreter as a broken one does.
BROKEN_PYTHON = """#!/bin/sh
case "$3" in
  *json*) echo '{"version": [3, 19, 0], "implementation": "cpython",'\
    '"executable": "'"$0"'", "prefixes": ["/x"]}';;
  *) echo "ModuleNotFoundError: No module named '_interpreters'" >&2; exit 1;;
esac
"""


@pytest.fixture(autouse=True)
def fresh_answers() -> Iterator[None]:
    for cached in (choose_kernel_python, interpreter.ask_version, interpreter.cannot_build_interpreters):
        cached.cache_clear()
    yield
    for cached in (choose_kernel_python, interpreter.ask_version, interpreter.cannot_build_interpreters):
        cached.cache_clear()


@pytest.fixture
def only_the_service_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A PATH and pyenv root with nothing but what `tmp_path/bin` gets (the service's own Python stays)."""
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    return tmp_path / "bin"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the service's own Python runs subinterpreters")
def test_with_only_python_3_11_each_workspace_gets_a_process(only_the_service_python: Path) -> None:
    chosen = choose_kernel_python()
    assert chosen.binary == sys.executable and chosen.own and not chosen.subinterpreters
    assert chosen.health() == {
        "kernels": "process per workspace",
        "python": ".".join(map(str, sys.version_info[:3])),
        "binary": sys.executable,
        "why": "only CPython 3.11 found: subinterpreters with a GIL of their own need 3.12+; "
        "set PYTHON_KERNEL_BINARY to a newer Python",
    }
    assert chosen.lent == []  # its own site-packages has the backport, and the packages it can load


def test_a_python_that_cannot_build_subinterpreters_is_passed_over_with_its_reason(
    only_the_service_python: Path,
) -> None:
    broken = only_the_service_python / "python3.19"
    broken.write_text(BROKEN_PYTHON)
    broken.chmod(0o755)
    chosen = choose_kernel_python()
    assert chosen.binary == sys.executable
    assert f"3.19.0 at {broken} (ModuleNotFoundError: No module named '_interpreters')" in chosen.why


def test_the_setting_names_exactly_the_python_used() -> None:
    chosen = choose_kernel_python(sys.executable)
    assert chosen.binary == sys.executable and chosen.own
    assert chosen.why.startswith(
        f"PYTHON_KERNEL_BINARY set ({chosen.health()['python']} at {sys.executable})"
    )
    assert chosen.subinterpreters is (sys.version_info >= (3, 12))


def test_a_missing_or_unusable_binary_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(KernelPythonError, match=r"^PYTHON_KERNEL_BINARY='/nowhere/python3': no such"):
        choose_kernel_python("/nowhere/python3")
    not_python = tmp_path / "python3"
    not_python.write_text("#!/bin/sh\necho hello\n")
    not_python.chmod(0o755)
    with pytest.raises(KernelPythonError, match=r"^PYTHON_KERNEL_BINARY='.*' is not a Python that runs"):
        choose_kernel_python(str(not_python))


def test_an_old_python_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text(BROKEN_PYTHON.replace("[3, 19, 0]", "[3, 10, 13]"))
    old.chmod(0o755)
    with pytest.raises(KernelPythonError, match="is CPython 3.10.13: the kernel needs CPython 3.11 or newer"):
        choose_kernel_python(str(old))


def test_a_foreign_python_is_lent_the_backport_alone() -> None:
    folder = interpreter.lent_backport()
    assert folder is not None
    assert sorted(p.name for p in Path(folder).iterdir()) == ["backports"]
    assert sorted(p.name for p in (Path(folder) / "backports").iterdir()) == ["interpreters"]


def test_the_setting_is_read_from_the_environment() -> None:
    assert load_settings({}).python_kernel_binary is None
    assert load_settings({"PYTHON_KERNEL_BINARY": ""}).python_kernel_binary is None
    assert load_settings({"PYTHON_KERNEL_BINARY": "/opt/py/bin/python3"}).python_kernel_binary == (
        "/opt/py/bin/python3"
    )
