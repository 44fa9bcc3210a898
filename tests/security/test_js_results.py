"""Odd results from a JavaScript function: every value type of SPEC §3, thrown non-errors, unhandled
rejections. Each answer is well-formed JSON with the documented type, never a 500, and the service lives."""

from typing import Any

import pytest

from tests.security.conftest import Tenant

pytestmark = pytest.mark.node

VALUES: dict[str, tuple[str, Any]] = {
    "undefined": ("return undefined", None),
    "nothing": ("", None),
    "null": ("return null", None),
    "true": ("return true", True),
    "a number": ("return 1.5", 1.5),
    "NaN": ("return NaN", None),
    "Infinity": ("return -Infinity", None),
    "-0": ("return -0", 0),
    "a string with every escape": ("return '\\u0000\\n\\u2028\\ud800\"\\\\'", '\x00\n\u2028\ud800"\\'),
    "a Date": ("return new Date(0)", "1970-01-01T00:00:00.000Z"),
    "an invalid Date": ("return new Date(NaN)", None),
    "a BigInt": ("return 2n ** 70n", str(2**70)),
    "a nested BigInt": ("return { n: [1n] }", {"n": ["1"]}),
    "a Map": ("return new Map([[1, 'a'], ['b', new Set([2])]])", {"1": "a", "b": [2]}),
    "a Set": ("return new Set([1, 1, 2])", [1, 2]),
    "a typed array": ("return new Float32Array([1, 2])", [1, 2]),
    "a Buffer": ("return Buffer.from('hi')", [104, 105]),
    "an ArrayBuffer": ("return new Uint8Array([7]).buffer", [7]),
    "a RegExp": ("return /x/g", {}),
    "an Error": ("return new Error('kept')", {}),
    "a function inside": ("return { f() {}, s: Symbol('x'), u: undefined, k: 1 }", {"k": 1}),
    "a sparse array": ("const a = [1]; a[3] = 4; return a", [1, None, None, 4]),
    "a Proxy": ("return new Proxy({ a: 1 }, {})", {"a": 1}),
    "a toJSON": ("return { toJSON() { return 'mine' } }", "mine"),
    "a getter": ("return { get g() { return 5 } }", {"g": 5}),
    "a promise of a value": ("return Promise.resolve(Promise.resolve(3))", 3),
    "a thenable": ("return { then(ok) { ok('then') } }", "then"),
    "an object with a null prototype": ("const o = Object.create(null); o.x = 1; return o", {"x": 1}),
    "__proto__ as a key": ("return JSON.parse('{\"__proto__\": 1}')", {"__proto__": 1}),
    "a WeakMap": ("return new WeakMap()", {}),
    "a generator": ("return (function* () { yield 1 })()", {}),
}

NOT_SERIALIZABLE = {
    "a function": "return () => 1",
    "a symbol": "return Symbol('s')",
    "a cycle": "const a = {}; a.a = a; return a",
    "a cycle through a Map": "const m = new Map(); m.set('m', m); return m",
    "a toJSON that throws": "return { toJSON() { throw new Error('no') } }",
    "a getter that throws": "return { get g() { throw new Error('no') } }",
    "a toJSON giving undefined": "return { toJSON() { return undefined } }",
    "a revoked Proxy inside": "const p = Proxy.revocable({}, {}); p.revoke(); return [p.proxy]",
    "a Proxy whose traps throw": "return new Proxy({}, { ownKeys() { throw new Error('no') } })",
}

THROWN = {
    "a string": ("throw 'plain text'", "plain text"),
    "a number": ("throw 42", "42"),
    "null": ("throw null", "null"),
    "undefined": ("throw undefined", "undefined"),
    "a symbol": ("throw Symbol('s')", "Symbol(s)"),
    "an object": ("throw { message: 'shaped like an error' }", "shaped like an error"),
    "an object with a message getter": ("throw { get message() { return 'got' } }", "got"),
    "an Error subclass": ("class Odd extends Error {}; throw new Odd('odd')", "odd"),
    "a rejected promise": ("return Promise.reject(new TypeError('rejected'))", "rejected"),
    "a revoked Proxy returned (its `then` is read)": (
        "const p = Proxy.revocable({}, {}); p.revoke(); return p.proxy",
        "revoked",
    ),
    "a frozen error": ("throw Object.freeze(new Error('frozen'))", "frozen"),
    "an error with a fake stack": (
        "const e = new Error('stack'); e.stack = { toString() { throw 1 } }; throw e",
        "stack",
    ),
    "a Proxy": ("throw new Proxy({}, { get() { throw new Error('trap') } })", ""),
    "an object with a throwing name": (
        "throw { message: 'm', get name() { throw new Error('no name') } }",
        "",
    ),
}


@pytest.mark.parametrize(("code", "expected"), VALUES.values(), ids=VALUES.keys())
def test_every_value_type_becomes_the_documented_json(tenant: Tenant, code: str, expected: Any) -> None:
    answer = tenant.attack(code)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == expected
    tenant.survived()


@pytest.mark.parametrize("code", NOT_SERIALIZABLE.values(), ids=NOT_SERIALIZABLE.keys())
def test_what_json_cannot_hold_is_a_clear_error(tenant: Tenant, code: str) -> None:
    answer = tenant.attack(code)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["type"] == "ResultNotSerializable"
    tenant.survived()


@pytest.mark.parametrize(("code", "says"), THROWN.values(), ids=THROWN.keys())
def test_whatever_is_thrown_is_a_function_error(tenant: Tenant, code: str, says: str) -> None:
    answer = tenant.attack(code)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["type"] == "FunctionError"
    assert says in error["message"]
    tenant.survived()


def test_unhandled_rejections_and_late_throws_do_not_break_the_worker(tenant: Tenant) -> None:
    code = (
        "Promise.reject(new Error('nobody waits')); Promise.reject('a string');"
        "setTimeout(() => { throw new Error('late') }, 0); setTimeout(() => Promise.reject(1), 0);"
        "await new Promise((resolve) => setTimeout(resolve, 20)); cache.n = (cache.n || 0) + 1; return "
        "cache.n"
    )
    assert tenant.save("rejections", {"f": code}).status_code == 200
    first, second = tenant.run("rejections", "f"), tenant.run("rejections", "f")
    assert first.status_code == 200, first.text
    assert second.json()["result"] == 2, second.text  # the same worker: it was not taken down
    tenant.survived()
