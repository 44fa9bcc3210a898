"""One JavaScript workspace against another: code, files, globals, `cache`, prototypes and builtins.

The attacker runs first and changes whatever it can reach; then the victim's own function shows what it
sees. Every workspace has its own worker thread and vm context, so nothing of the attacker's may show.
"""

import pytest

from tests.security.conftest import API_KEY, Tenant

pytestmark = pytest.mark.node

# The victim reports the state an attacker would like to change.
VICTIM = """
const plain = {};
return {
  cache: Object.keys(cache),
  globals: ['stolen', 'planted'].filter((name) => name in globalThis),
  objectProto: plain.polluted === undefined && Object.keys(Object.prototype).length === 0,
  arrayMap: [1, 2].map((x) => x * 2).join(','),
  json: JSON.stringify({ a: 1 }),
  log: typeof console.log === 'function' && console.log.name !== 'evil',
  buffer: Buffer.from('ab').toString('hex'),
  utilFormat: require('util').format('%s!', 'ok'),
  promise: await Promise.resolve(7),
  math: Math.max(1, 2),
  date: typeof Date.now(),
  stringify: String([1, 2]),
};
"""
CLEAN = {
    "cache": [],
    "globals": [],
    "objectProto": True,
    "arrayMap": "2,4",
    "json": '{"a":1}',
    "log": True,
    "buffer": "6162",
    "utilFormat": "ok!",
    "promise": 7,
    "math": 2,
    "date": "number",
    "stringify": "1,2",
}

ATTACKS = {
    "cache": "cache.secret = 'mine'; cache.__proto__.polluted = 1; return Object.keys(cache)",
    "globals": "globalThis.planted = 1; var stolen = 2; return 'ok'",
    "Object.prototype": "Object.prototype.polluted = 'yes'; Object.prototype.extra = 1; return 'ok'",
    "Array.prototype.map": "Array.prototype.map = () => ['pwned']; return 'ok'",
    "JSON.stringify": "JSON.stringify = () => 'pwned'; return 'ok'",
    "console.log": "console.log = function evil() {}; return 'ok'",
    "host Buffer prototype": (
        "try { Buffer.prototype.toString = () => 'pwned' } catch {}"
        "try { Object.getPrototypeOf(Buffer.prototype).join = () => 'pwned' } catch {} return 'ok'"
    ),
    "host util": "try { require('util').format = () => 'pwned' } catch {} return 'ok'",
    "host Object.prototype": (
        "try { Object.getPrototypeOf(console).toString = () => 'pwned' } catch {}"
        "try { Object.getPrototypeOf(console).polluted = 1 } catch {} return 'ok'"
    ),
    "Promise.prototype.catch": "Promise.prototype.catch = function () { return 'pwned' }; return 'ok'",
    "Math and Date": "Math.max = () => -1; Date.now = () => 'never'; return 'ok'",
    "Array.prototype.toString": "Array.prototype.toString = () => 'pwned'; return 'ok'",
    "Symbol registry": "Symbol.for('shared').description; globalThis[Symbol.for('shared')] = 1; return 'ok'",
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_an_attackers_changes_do_not_reach_another_workspace(tenant: Tenant, attack: str) -> None:
    assert tenant.save("victim-js", {"look": VICTIM}).status_code == 200
    assert tenant.run("victim-js", "look").json()["result"] == CLEAN
    tenant.attack(attack)
    answer = tenant.run("victim-js", "look")
    assert answer.json()["result"] == CLEAN, answer.text
    tenant.survived()


def test_cache_is_per_workspace_and_kept_across_runs(tenant: Tenant) -> None:
    code = "cache.count = (cache.count || 0) + 1; return cache.count"
    assert tenant.save("cache-a", {"f": code}).status_code == 200
    assert tenant.save("cache-b", {"f": code}).status_code == 200
    assert [tenant.run("cache-a", "f").json()["result"] for _ in range(3)] == [1, 2, 3]
    assert tenant.run("cache-b", "f").json()["result"] == 1


READ_OTHERS = {
    "require a relative file": "const n = '../victim-js/index.js'; return require(n)",
    "require an absolute file": "return require(parameters.storage + '/victim-js/index.js')",
    "require the victim's yaml": "return require(parameters.storage + '/victim-js/workspace.yaml')",
    "fs": "const m = 'fs'; return require(m).readFileSync(parameters.storage + '/victim-js/index.js', "
    "'utf8')",
    "fetch file:": "return await (await fetch('file://' + parameters.storage + "
    "'/victim-js/index.js')).text()",
    "the API without a key": "return await (await fetch(parameters.url + '/v2/functions/victim-js')).text()",
    "the API with a guessed key": (
        "const r = await fetch(parameters.url + '/v2/functions/victim-js',"
        " { headers: { authorization: 'Bearer guess' } }); return [r.status, await r.text()]"
    ),
    "the functions table": "return Object.keys(functions).concat(typeof look)",
}


@pytest.mark.parametrize("attack", READ_OTHERS.values(), ids=READ_OTHERS.keys())
def test_another_workspaces_code_cannot_be_read(tenant: Tenant, attack: str) -> None:
    assert tenant.save("victim-js", {"look": VICTIM}).status_code == 200
    answer = tenant.attack(attack, {"storage": str(tenant.storage), "url": tenant.url})
    assert answer.status_code in (200, 422), answer.text
    assert "globals: ['stolen'" not in answer.text and "victim-js" not in answer.json().get("result", "")
    assert 'functions[\\"look\\"]' not in answer.text and "look" not in str(answer.json().get("result"))
    assert API_KEY not in answer.text
    tenant.survived()


def test_a_workspace_cannot_change_anothers_files(tenant: Tenant) -> None:
    assert tenant.save("victim-js", {"look": VICTIM}).status_code == 200
    before = {
        path.name: path.read_bytes() for path in (tenant.storage / "victim-js").iterdir() if path.is_file()
    }
    code = (
        "const m = 'fs'; const out = [];"
        "try { require(m).writeFileSync(parameters.storage + '/victim-js/index.js', 'x') } catch (e) { "
        "out.push(1) }"
        "try { await fetch('file://' + parameters.storage + '/victim-js/index.js', { method: 'PUT', body: "
        "'x' }) }"
        " catch (e) { out.push(2) } return out"
    )
    assert tenant.attack(code, {"storage": str(tenant.storage)}).json()["result"] == [1, 2]
    after = {
        path.name: path.read_bytes() for path in (tenant.storage / "victim-js").iterdir() if path.is_file()
    }
    assert after == before
    assert tenant.run("victim-js", "look").json()["result"] == CLEAN


POLLUTING_PARAMETERS = [
    {"__proto__": {"polluted": "yes"}},
    {"constructor": {"prototype": {"polluted": "yes"}}},
    {"a": {"__proto__": {"polluted": "yes"}}},
    {"__proto__": None},
]


@pytest.mark.parametrize("params", POLLUTING_PARAMETERS)
def test_parameters_cannot_pollute_prototypes(tenant: Tenant, params: dict[str, object]) -> None:
    code = (
        "const spread = { ...parameters };"
        "return [({}).polluted, parameters.polluted, spread.polluted, [].polluted, JSON.parse('{}').polluted,"
        " Object.getPrototypeOf(parameters) === Object.prototype, Object.keys(parameters)]"
    )
    answer = tenant.attack(code, params)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == [None, None, None, None, None, True, list(params)]
    tenant.survived()


def test_declared_parameters_with_prototype_names_are_plain_values(tenant: Tenant) -> None:
    declared = {
        name: {"type": "string"} for name in ("__proto__", "constructor", "toString", "hasOwnProperty")
    }
    code = (
        "return [typeof __proto__, constructor, toString, hasOwnProperty, ({}).toString === "
        "Object.prototype.toString]"
    )
    saved = tenant.save("odd-params", {"f": {"code": code, "parameters": declared}})
    assert saved.status_code == 200, saved.text
    params = {name: f"v-{name}" for name in declared}
    answer = tenant.run("odd-params", "f", params)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"][1:] == ["v-constructor", "v-toString", "v-hasOwnProperty", True]
    tenant.survived()
