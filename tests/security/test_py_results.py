"""Weird results: every value type of SPEC §4, values JSON cannot hold, raised non-errors, async errors."""

from typing import Any

import pytest

from tests.security.conftest import Arsenal, Tenant

pytestmark = [pytest.mark.kernel]

# (code, the answer's result) for values that become JSON
VALUES: dict[str, tuple[str, Any]] = {
    "none": ("return None", None),
    "falls off the end": ("x = 1", None),
    "bool": ("return True", True),
    "int": ("return -7", -7),
    "huge int": ("return 10 ** 30", 10**30),
    "float": ("return 1.5", 1.5),
    "str": ("return 'héllo \\u2028 \\x00'", "héllo \u2028 \x00"),
    "lone surrogate": ("print('\\udc80')\nreturn ['\\ud800', 'ok']", ["?", "ok"]),  # UTF-8 cannot hold it
    "list": ("return [1, [2, [3]]]", [1, [2, [3]]]),
    "tuple": ("return (1, 2)", [1, 2]),
    "set": ("return {3}", [3]),
    "frozenset": ("return frozenset({4})", [4]),
    "dict": ("return {'a': {'b': None}}", {"a": {"b": None}}),
    "int keys": ("return {1: 'a', None: 'b', 2.5: 'c'}", {"1": "a", "null": "b", "2.5": "c"}),
    "datetime": (
        "import datetime\nreturn datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)",
        "2024-01-02T03:04:05+00:00",
    ),
    "date": ("import datetime\nreturn datetime.date(2024, 1, 2)", "2024-01-02"),
    "time": ("import datetime\nreturn datetime.time(3, 4)", "03:04:00"),
    "decimal integral": ("import decimal\nreturn decimal.Decimal('2')", 2),
    "decimal fraction": ("import decimal\nreturn decimal.Decimal('1.5')", 1.5),
    "bytes": ("return b'hi'", "aGk="),
    "bytearray": ("return bytearray(b'hi')", "aGk="),
    "subclass of dict": ("class D(dict):\n    def items(self):\n        return []\nreturn D(a=1)", {}),
    "subclass of str": (
        "class S(str):\n    def __str__(self):\n        return 'other'\nreturn S('same')",
        "same",
    ),
    "tolist of its own": ("class T:\n    def tolist(self):\n        return [1]\nreturn T()", [1]),
    "async value": ("async def g():\n    return 5\nreturn await g()", 5),
}


@pytest.fixture(scope="module")
def values(tenant: Tenant) -> Arsenal:
    return Arsenal(tenant, "py-values", {key: code for key, (code, _result) in VALUES.items()})


@pytest.mark.parametrize("key", VALUES.keys())
def test_values_become_json(tenant: Tenant, values: Arsenal, key: str) -> None:
    answer = values.run(key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == VALUES[key][1]
    tenant.survived("python")


# (code, error type, error name) for values that cannot become JSON and for raises of every kind
FAILURES: dict[str, tuple[str, str, str | None]] = {
    "nan": ("return float('nan')", "ResultNotSerializable", None),
    "infinity": ("return [float('inf')]", "ResultNotSerializable", None),
    "object": ("return object()", "ResultNotSerializable", None),
    "function": ("return len", "ResultNotSerializable", None),
    "generator": ("return (i for i in [])", "ResultNotSerializable", None),
    "class": ("class A:\n    pass\nreturn A", "ResultNotSerializable", None),
    "tuple key": ("return {(1, 2): 'a'}", "ResultNotSerializable", None),
    "cycle": ("x = []\nx.append(x)\nreturn x", "ResultNotSerializable", None),
    "coroutine never awaited": ("async def g():\n    pass\nreturn [g()]", "ResultNotSerializable", None),
    "tolist returning itself": (
        "class T:\n    def tolist(self):\n        return self\nreturn T()",
        "ResultNotSerializable",
        None,
    ),
    "tolist raising": (
        "class T:\n    def tolist(self):\n        raise ValueError('no')\nreturn T()",
        "ResultNotSerializable",
        None,
    ),
    "raise an int": ("raise 1", "FunctionError", "TypeError"),
    "raise a string": ("raise 'boom'", "FunctionError", "TypeError"),
    "raise None": ("raise None", "FunctionError", "TypeError"),
    "raise a class": ("raise ValueError", "FunctionError", "ValueError"),
    "raise a non-exception class": ("class E:\n    pass\nraise E", "FunctionError", "TypeError"),
    "raise from a cycle": (
        "a = ValueError('a')\nb = ValueError('b')\ntry:\n    raise a from b\nexcept ValueError:\n"
        "    pass\nraise b from a",
        "FunctionError",
        None,
    ),
    "exception group": (
        "raise ExceptionGroup('g', [ValueError('v'), TypeError('t')])",
        "FunctionError",
        "ExceptionGroup",
    ),
    "exception with a failing str": (
        "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nraise E()",
        "FunctionError",
        None,
    ),
    "exception with a non-str str": (
        "class E(Exception):\n    def __str__(self):\n        return 5\nraise E()",
        "FunctionError",
        None,
    ),
    "async raise": ("async def g():\n    raise ValueError('late')\nawait g()", "FunctionError", "ValueError"),
    "async raise of a non-exception": (
        "async def g():\n    raise 5\nawait g()",
        "FunctionError",
        "TypeError",
    ),
    "async generator error": (
        "async def g():\n    yield 1\n    raise KeyError('k')\nasync for _ in g():\n    pass",
        "FunctionError",
        "KeyError",
    ),
    "await of a non-awaitable": ("await 5", "FunctionError", "TypeError"),
    "stop iteration": ("raise StopIteration", "FunctionError", "StopIteration"),
    "stop async iteration": ("raise StopAsyncIteration", "FunctionError", "StopAsyncIteration"),
    "error raised by another function": ("return functions['missing']()", "FunctionError", "KeyError"),
}


@pytest.fixture(scope="module")
def failures(tenant: Tenant) -> Arsenal:
    return Arsenal(tenant, "py-failures", {key: code for key, (code, *_rest) in FAILURES.items()})


@pytest.mark.parametrize("key", FAILURES.keys())
def test_what_json_cannot_hold_and_raises_of_any_kind_are_errors(
    tenant: Tenant, failures: Arsenal, key: str
) -> None:
    _code, kind, name = FAILURES[key]
    answer = failures.run(key)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["type"] == kind, error
    assert isinstance(error["message"], str)
    if name is not None:
        assert error["name"] == name, error
    tenant.survived("python")
