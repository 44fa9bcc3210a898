"""The sandbox's compile checks, in this process (no kernel)."""

import ast
from typing import Any

import pytest

from tests.kernel import sandbox_modules  # noqa: F401  # puts the sandbox on sys.path

from sandbox.checks import check, compile_function  # isort: skip


def spec(code: str, *parameters: str) -> dict[str, Any]:
    return {"name": "fn", "code": code, "locals": list(parameters), "defaults": "{}", "bindable": True}


def run(code: str, *parameters: str, **values: Any) -> Any:
    scope: dict[str, Any] = {}
    exec(compile_function(spec(code, *parameters)), {"__sandbox_attribute__": getattr}, scope)
    return scope["_user"](values, *(values[p] for p in parameters))


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("return (1).__class__", "__class__"),
        ("return ().__class__.__bases__", "__bases__"),
        ("return f.__globals__", "__globals__"),
        ("def g(): pass\nreturn g.__code__", "__code__"),
        ("import sys\nreturn sys._getframe().f_back", "f_back"),
        ("return __builtins__", "__builtins__"),
        ("return __sandbox_attribute__", "__sandbox_attribute__"),
    ],
)
def test_routes_to_the_interpreters_internals_are_refused_at_compile(code: str, refused: str) -> None:
    with pytest.raises(SyntaxError, match=refused):
        compile_function(spec(code))


def test_a_class_name_may_be_read() -> None:
    assert run("return (1).__class__.__name__") == "int"


def test_errors_are_reported_in_the_users_lines_and_columns() -> None:
    errors = check({"functions": [spec("x = 1\ny = x.__dict__\n"), {**spec("return 1"), "name": "ok"}]})
    assert errors == {
        "errors": [{"function": "fn", "message": errors["errors"][0]["message"], "line": 2, "column": 5}]
    }
    assert "__dict__" in errors["errors"][0]["message"]


def test_parameters_are_locals_and_result_is_returned() -> None:
    assert run("result = a + b", "a", "b", a=1, b=2) == 3
    assert run("return parameters['a']", "a", a=5) == 5


def test_future_imports_apply_to_the_body() -> None:
    code = '"""doc"""\nfrom __future__ import annotations\nx: undefined_name = 1\nreturn x'
    assert run(code) == 1


def test_a_body_with_await_becomes_a_coroutine_function() -> None:
    tree = ast.parse("import asyncio\nawait asyncio.sleep(0)\nreturn 1")
    assert tree is not None
    scope: dict[str, Any] = {}
    exec(compile_function(spec("await x\nreturn 1")), {}, scope)
    assert ast.iscoroutinefunction(scope["_user"]) if hasattr(ast, "iscoroutinefunction") else True
    import inspect

    assert inspect.iscoroutinefunction(scope["_user"])


def test_format_goes_through_the_guard() -> None:
    seen: list[str] = []

    def guard(obj: Any, name: str) -> Any:
        seen.append(name)
        return getattr(obj, name)

    scope: dict[str, Any] = {}
    exec(compile_function(spec("return '{}'.format(1)")), {"__sandbox_attribute__": guard}, scope)
    assert scope["_user"]({}) == "1" and seen == ["format"]
