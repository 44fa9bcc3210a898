"""The sandbox's import guard and module views, in this process (no kernel)."""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel import sandbox_modules  # noqa: F401  # puts the sandbox on sys.path

from sandbox import imports  # isort: skip
from sandbox.state import CONFIG  # isort: skip


@pytest.fixture(autouse=True)
def config() -> Iterator[dict[str, Any]]:
    saved = dict(CONFIG)
    CONFIG.update(builtins=["json", "math", "importlib"], packages=["requests"])
    yield CONFIG
    CONFIG.clear()
    CONFIG.update(saved)


def test_allowed_modules_come_as_read_only_views() -> None:
    math = imports.guarded_import("math")
    assert math.sqrt(4) == 2 and repr(math) == "<module 'math'>"
    with pytest.raises(AttributeError, match="read-only"):
        math.pi = 3
    with pytest.raises(AttributeError, match="no public attribute"):
        math.__loader__  # noqa: B018


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("os", "add it to PYTHON_BUILTIN_MODULES"),
        ("numpy", "add it to PYTHON_PACKAGES_WHITELIST_IMPORT"),
        ("ctypes", "not supported, because it reads and writes any memory"),
        ("_interpreters", "not supported, because it reaches the other workspaces' interpreters"),
        ("sandbox", "not supported, because it is the sandbox"),
        ("sandbox.entry", "not supported, because it is the sandbox"),
        ("kernel", "not supported, because it is the sandbox"),
        ("hosting.interpreters", "not supported, because it is the sandbox"),
        ("checks", "add it to PYTHON_PACKAGES_WHITELIST_IMPORT"),
    ],
)
def test_refused_imports_say_why(name: str, says: str) -> None:
    with pytest.raises(ImportError, match=says):
        imports.guarded_import(name)


def test_the_sandbox_is_refused_even_when_a_setting_names_it(config: dict[str, Any]) -> None:
    config["packages"] = ["sandbox", "kernel", "hosting"]
    for name in ("sandbox", "sandbox.checks", "kernel", "hosting"):
        assert not imports.allowed(name)
        assert not imports.importable_by_name(name)


def test_relative_and_star_imports_are_refused() -> None:
    with pytest.raises(ImportError, match="relative"):
        imports.guarded_import("json", level=1)
    with pytest.raises(ImportError, match=r"import \*"):
        imports.guarded_import("json", fromlist=("*",))


def test_views_do_not_hand_out_refused_modules() -> None:
    importlib = imports.guarded_import("importlib")
    with pytest.raises(AttributeError, match="does not hand out module 'sys'"):
        importlib.sys  # noqa: B018
