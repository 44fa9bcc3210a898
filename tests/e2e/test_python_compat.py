"""Ordinary Python that functions accept: a class's name, print's `sep` and `end`, cmath, and a body that
starts with `from __future__ import annotations` (real kernels, no HTTP in between)."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.python.runtime import PythonRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.errors import CompileError
from domain.model import Json, Language, Outcome, Status
from tests.python.kernels import kernel_pythons, python_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]


@pytest.fixture(params=kernel_pythons())
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Workspaces]:
    runtime: PythonRuntime = python_runtime(timeout_ms=5000, python_binary=request.param)
    await runtime.start()
    try:
        yield Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
    finally:
        await runtime.aclose()


async def run(service: Workspaces, code: str, params: Json = None) -> Outcome:
    body = {"functions": {"f": {"language": "python", "code": code}}}
    await service.save(workspace_from_body("w", body))
    return await service.run("w", "f", params)


async def result_of(service: Workspaces, code: str) -> Any:
    outcome = await run(service, code)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


async def compile_error(service: Workspaces, code: str) -> dict[str, Any]:
    with pytest.raises(CompileError) as caught:
        await run(service, code)
    return {"message": caught.value.message, **caught.value.details}


async def test_a_class_names_itself_through_dunder_class(service: Workspaces) -> None:
    code = (
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "    def __repr__(self):\n"
        "        return f'{self.__class__.__name__}({self.x})'\n"
        "p = Point(1)\n"
        "qualname = p.__class__.__qualname__  # _user.<locals>.Point: the body is a function's\n"
        "return [repr(p), qualname.rpartition('.')[2], p.__class__.__module__, type(p).__name__]"
    )
    assert await result_of(service, code) == ["Point(1)", "Point", "functions", "Point"]


@pytest.mark.parametrize(
    "code",
    [
        "return (1).__class__",
        "return isinstance(1, (1).__class__)",
        "return (1).__class__.__base__",
        "return (1).__class__.__bases__",
        "return (1).__class__.__name__.__class__",
        "class A:\n    pass\na = A()\na.__class__ = A",
    ],
)
async def test_dunder_class_alone_stays_refused_and_says_to_use_type(service: Workspaces, code: str) -> None:
    error = await compile_error(service, code)
    assert "is not allowed in functions" in error["message"], error
    if "__base" not in code:
        assert "use type(x)" in error["message"], error


async def test_print_honours_sep_and_end(service: Workspaces) -> None:
    code = (
        "import logging\n"
        "print('a', 'b', sep='-')\n"
        "for i in range(3):\n"
        "    print(i, end=',')\n"
        "print()\n"
        "print('x', 'y', sep=None, end=None)\n"
        "print('two\\nlines')\n"
        "print('left', end=' ')\n"
        "logging.warning('between')\n"
        "print('tail', end='')\n"
        "return None"
    )
    outcome = await run(service, code)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert [(e.level, e.message) for e in outcome.logs] == [
        ("log", "a-b"),
        ("log", "0,1,2,"),
        ("log", "x y"),
        ("log", "two\nlines"),
        ("log", "left "),
        ("warn", "between"),
        ("log", "tail"),
    ]


async def test_print_refuses_what_print_refuses(service: Workspaces) -> None:
    outcome = await run(service, "print(1, sep=2)")
    assert outcome.status is Status.FAILED and outcome.error is not None
    assert outcome.error["name"] == "TypeError" and "sep must be None or a string" in outcome.error["message"]


async def test_cmath_is_allowed_by_default(service: Workspaces) -> None:
    assert await result_of(service, "import cmath\nreturn [str(cmath.sqrt(-4)), cmath.phase(-1)]") == [
        "2j",
        3.141592653589793,
    ]


async def test_a_body_may_start_with_from_future_import_annotations(service: Workspaces) -> None:
    code = (
        '"""A docstring first is fine too."""\n'
        "from __future__ import annotations\n"
        "import dataclasses, typing\n"
        "@dataclasses.dataclass\n"
        "class Node:\n"
        "    value: int\n"
        "    next: Node | None = None\n"
        "def total(node: Node | None) -> int:\n"
        "    return 0 if node is None else node.value + total(node.next)\n"
        "hints = typing.get_type_hints(total, localns={'Node': Node})\n"
        "return [total(Node(1, Node(2))), dataclasses.fields(Node)[1].type, sorted(hints)]"
    )
    assert await result_of(service, code) == [3, "Node | None", ["node", "return"]]


async def test_a_future_import_after_the_start_or_of_an_unknown_feature_is_a_compile_error(
    service: Workspaces,
) -> None:
    late = await compile_error(service, "x = 1\nfrom __future__ import annotations\nreturn x")
    assert late["line"] == 2 and "beginning" in late["message"], late
    unknown = await compile_error(service, "from __future__ import nonsense\nreturn 1")
    assert unknown["line"] == 1 and "nonsense" in unknown["message"], unknown
