"""Escapes from a JavaScript function's vm context to the Node host's `process` (SPEC §8).

Each payload tries one route to a host object and returns what it reached; the probe around it reports
whether that is a real `process` (its `binding`, `dlopen` or `kill`). Contained means: refused with an
error, or what came back is not the host's `process`.
"""

import pytest

from tests.security.conftest import API_KEY, CANARY, Tenant

pytestmark = pytest.mark.node

# `{payload}` is the body of an async function whose return value is what the route reached.
PROBE = """
const isProcess = (x) => x !== null && (typeof x === 'object' || typeof x === 'function') &&
  (typeof x.binding === 'function' || typeof x.dlopen === 'function' || typeof x.kill === 'function');
let reached;
try {{
  reached = await (async () => {{
{payload}
  }})();
}} catch (error) {{
  return {{ escaped: false, refused: String(error && error.message || error) }};
}}
const all = Array.isArray(reached) ? reached : [reached];
return {{ escaped: all.some(isProcess), reached: typeof reached }};
"""

# A getter planted on a host prototype that Node itself reads from `process` (a deprecation warning reads
# `process.noDeprecation`): the route that reached the worker's real process before the host was frozen.
DEPRECATION_GADGET = """
let leaked;
const plant = (proto) => {
  for (const key of ['noDeprecation', 'throwDeprecation', 'traceDeprecation']) {
    const get = function () { leaked = leaked || this; return undefined };
    Object.defineProperty(proto, key, { configurable: true, get });
  }
};
plant(%s);
try { new Buffer(1) } catch {}
try { require('util')._extend({}, {}) } catch {}
await new Promise((resolve) => setTimeout(resolve, 5));
return leaked;
"""

CONSTRUCTOR_CHAINS = {
    "own realm": "return this.constructor.constructor('return process')()",
    "console": "return console.constructor.constructor('return process')()",
    "console.log": "return console.log.constructor('return process')()",
    "require": "return require.constructor('return process')()",
    "Buffer": "return Buffer.constructor('return process')()",
    "a Buffer": "return Buffer.from('x').constructor.constructor('return process')()",
    "setTimeout": "return setTimeout.constructor('return process')()",
    "a Timeout": "const t = setTimeout(() => {}, 1); return t.constructor.constructor('return process')()",
    "setImmediate": "return setImmediate(() => {}).constructor.constructor('return process')()",
    "fetch": "return fetch.constructor('return process')()",
    "URL": "return new URL('http://x').constructor.constructor('return process')()",
    "TextEncoder output": "return new TextEncoder().encode('x').constructor.constructor('return process')()",
    "structuredClone": "return structuredClone({}).constructor.constructor('return process')()",
    "crypto": "return crypto.getRandomValues.constructor('return process')()",
    "performance": "return performance.now.constructor('return process')()",
    "AbortSignal": "return AbortSignal.abort().constructor.constructor('return process')()",
    "util.inspect": "return require('util').inspect.constructor('return process')()",
    "http.globalAgent": "return require('http').globalAgent.constructor.constructor('return process')()",
    "a host error": (
        "try { Buffer.alloc(-1) } catch (e) { return e.constructor.constructor('return process')() }"
    ),
    "a host promise": "return require('util').promisify(setTimeout)(1).constructor.constructor('return "
    "process')()",
    "host AsyncGeneratorFunction": (
        "const gen = require('stream').Readable.prototype[Symbol.asyncIterator];"
        "return Object.getPrototypeOf(gen).constructor('return process')()"
    ),
    "host AsyncFunction": (
        "const fn = require('stream').promises.pipeline;"
        "return Object.getPrototypeOf(fn).constructor('return process')()"
    ),
    "__proto__ walk": "return console.log.__proto__.__proto__.constructor.constructor('return process')()",
    "Reflect.construct": "return Reflect.construct(console.log.constructor, ['return process'])()",
    "bind": "return Function.prototype.bind.call(console.log.constructor, null, 'return process')()()",
    "getPrototypeOf": ("return Object.getPrototypeOf(console).constructor.constructor('return process')()"),
    "defineProperty read back": (
        "const d = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(console.log), 'constructor');"
        "return (d.value || d.get())('return process')()"
    ),
}

GLOBAL_ROUTES = {
    "globalThis": "return globalThis.process",
    "global": "return global.process",
    "this": "return this.process",
    "Reflect.get": "return Reflect.get(globalThis, 'process')",
    "eval": "return eval('typeof process === \"undefined\" ? undefined : process')",
    "indirect eval": "return (0, eval)('this.process')",
    "Function": "return Function('return this.process')()",
    "with": "with (globalThis) { return typeof process === 'undefined' ? undefined : process }",
    "module": "return module",
    "exports": "return exports",
    "__dirname": "return __dirname",
    "require.main": "return require.main",
    "require.cache": "return require.cache",
    "arguments.callee.caller": (
        "function g() { return g.caller } return [g(), [1].map(function h() { return h.caller })[0]]"
    ),
    "caller from a host callback": (
        "let seen; require('util').inspect({ [Symbol.for('nodejs.util.inspect.custom')]: function g() {"
        " try { seen = g.caller } catch (e) { seen = undefined } return 'x' } }); return seen"
    ),
    "inspect options": (
        "let seen = []; console.log({ [Symbol.for('nodejs.util.inspect.custom')](depth, options, inspect) {"
        " seen = [options, inspect, this, ...Object.values(options)]; return 'x' } }); return seen"
    ),
    "context prepareStackTrace": (
        "Error.prepareStackTrace = (e, frames) => frames.flatMap((f) => [f.getThis(), f.getFunction()]);"
        "const stack = new Error().stack; delete Error.prepareStackTrace; return stack"
    ),
    "host prepareStackTrace": (
        "let HostError; try { Buffer.alloc(-1) } catch (e) { HostError = "
        "Object.getPrototypeOf(e.constructor) }"
        "let seen = []; try { HostError.prepareStackTrace = (e, frames) => { seen = frames.flatMap((f) =>"
        " [f.getThis(), f.getFunction()]); return 'x' } } catch {}"
        "try { Buffer.alloc(-1) } catch (e) { e.stack } return seen"
    ),
    "host stackTraceLimit and captureStackTrace": (
        "let HostError; try { Buffer.alloc(-1) } catch (e) { HostError = "
        "Object.getPrototypeOf(e.constructor) }"
        "const holder = {}; HostError.captureStackTrace(holder); return [holder.stack, "
        "HostError.stackTraceLimit]"
    ),
    "a Proxy handed to host code": (
        "const seen = []; const spy = new Proxy({}, { get(t, k, r) { seen.push(r, t); return undefined },"
        " has(t, k) { seen.push(t); return false } });"
        "try { require('util').inspect(spy, { showProxy: false }) } catch {}"
        "try { new URL(spy) } catch {} try { Buffer.from(spy) } catch {} try { console.log(spy) } catch {}"
        "return seen"
    ),
    "a thenable resolved by host code": (
        "let seen = []; await require('util').promisify((cb) => cb(null, { then(ok) { seen.push(this, ok);"
        " ok(1) } }))(); return seen"
    ),
    "Symbol.species on a host promise": (
        "const p = require('util').promisify(setTimeout)(1); let seen = [];"
        "class Spy extends Promise { constructor(f) { super(f); seen.push(f) } }"
        "try { p.constructor = Spy } catch {} await p.then(() => 1); return seen"
    ),
    "WebAssembly": "await WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])); return "
    "'compiled'",
}

POLLUTION_GADGETS = {
    "Object.prototype getter": DEPRECATION_GADGET % "Object.getPrototypeOf(console)",
    "EventEmitter.prototype getter": DEPRECATION_GADGET
    % "Object.getPrototypeOf(Object.getPrototypeOf(require('stream').Readable.prototype))",
    "Function.prototype getter": DEPRECATION_GADGET % "Object.getPrototypeOf(console.log)",
    "host String.prototype.slice": (
        "const S = Object.getPrototypeOf(Object.getPrototypeOf(console).constructor('x'));"
        "S.slice = function () { return 'forged' }; return 'forged' === 'abc'.slice.call('abc') ? 1 : 2"
    ),
}

REFUSED_BUILTINS = [
    "fs",
    "node:fs",
    "fs/promises",
    "node:fs/promises",
    "child_process",
    "node:child_process",
    "worker_threads",
    "vm",
    "module",
    "node:module",
    "v8",
    "inspector",
    "os",
    "net",
    "cluster",
    "async_hooks",
    "wasi",
    "repl",
    "dgram",
    "tls",
    "perf_hooks",
    "trace_events",
]

REQUIRE_ROUTES = {
    "call": "return require.call(null, '{m}')",
    "apply": "return Reflect.apply(require, null, ['{m}'])",
    "bind": "return require.bind(null)('{m}')",
    "String object": "return require(new String('{m}'))",
    "toString": "return require({{ toString() {{ return '{m}' }} }})",
}

PATH_REQUIRES = [
    "./index.js",
    "../index.js",
    "/etc/passwd",
    "file:///etc/passwd",
    "util/../fs",
    "stream/../child_process",
    "node:util/../fs",
    "crypto/../../fs",
    "FS",
    "fs ",
    "",
]

DYNAMIC_IMPORTS = {
    "import()": "return await import('fs')",
    "import() of a builtin": "return await import('node:child_process')",
    "import() of data:": "return await import('data:text/javascript,export default process')",
    "import() in eval": "return await eval(\"import('fs')\")",
    "import() in Function": "return await Function(\"return import('fs')\")()",
    "import.meta": "return eval('import.meta')",
}


def contained(tenant: Tenant, payload: str) -> dict[str, object]:
    answer = tenant.attack(PROBE.format(payload=payload))
    assert answer.status_code == 200, answer.text
    assert CANARY not in answer.text and API_KEY not in answer.text
    verdict: dict[str, object] = answer.json()["result"]
    assert verdict["escaped"] is False, verdict
    tenant.survived()
    return verdict


@pytest.mark.parametrize("payload", CONSTRUCTOR_CHAINS.values(), ids=CONSTRUCTOR_CHAINS.keys())
def test_no_constructor_chain_leads_to_the_host_function(tenant: Tenant, payload: str) -> None:
    verdict = contained(tenant, payload)
    # Every chain ends in a refusal: the context's Function has no `process`, the host's is sealed.
    assert "refused" in verdict, verdict
    assert any(why in str(verdict["refused"]) for why in ("not available outside", "process is not defined"))


@pytest.mark.parametrize("payload", GLOBAL_ROUTES.values(), ids=GLOBAL_ROUTES.keys())
def test_no_global_or_host_callback_hands_out_process(tenant: Tenant, payload: str) -> None:
    contained(tenant, payload)


@pytest.mark.parametrize("payload", POLLUTION_GADGETS.values(), ids=POLLUTION_GADGETS.keys())
def test_host_prototypes_cannot_be_polluted(tenant: Tenant, payload: str) -> None:
    verdict = contained(tenant, payload)
    assert verdict.get("reached") != "number" or verdict.get("escaped") is False
    # The host realm's prototypes are frozen: planting a getter there is refused outright.
    if "refused" in verdict:
        assert "not extensible" in str(verdict["refused"]) or "Cannot" in str(verdict["refused"])


def test_a_forged_reply_line_does_not_reach_the_service(tenant: Tenant) -> None:
    code = (
        "const S = Object.getPrototypeOf(Object.getPrototypeOf(console).constructor('x'));"
        "const slice = S.slice;"
        'S.slice = function (a, b) { return slice.call(this, a, b) + \'\\n{"type":"result","id":1}\' };'
        "return 'honest'"
    )
    answer = tenant.attack(code)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "honest"
    tenant.survived()


def test_typeof_process_is_undefined_by_every_name(tenant: Tenant) -> None:
    code = (
        "return [typeof process, typeof globalThis.process, typeof global.process, typeof module,"
        " typeof exports, typeof __dirname, typeof __filename, typeof Deno, typeof Bun,"
        " typeof BroadcastChannel, typeof MessageChannel, typeof Worker, typeof SharedWorker,"
        " typeof importScripts, typeof postMessage, typeof WebAssembly.compile]"
    )
    answer = tenant.attack(code)
    assert answer.json()["result"][:15] == ["undefined"] * 15
    tenant.survived()


@pytest.mark.parametrize("module", REFUSED_BUILTINS)
def test_a_refused_builtin_is_named_with_the_setting(tenant: Tenant, module: str) -> None:
    answer = tenant.attack(f"return require('{module}')")
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert f"'{module.removeprefix('node:')}'" in message and "NODE_BUILTIN_MODULES" in message
    tenant.survived()


@pytest.mark.parametrize("route", REQUIRE_ROUTES.values(), ids=REQUIRE_ROUTES.keys())
@pytest.mark.parametrize("module", ["fs", "child_process", "vm"])
def test_every_route_through_require_is_refused(tenant: Tenant, route: str, module: str) -> None:
    answer = tenant.attack(route.format(m=module))
    assert answer.status_code == 422, answer.text
    assert "NODE_BUILTIN_MODULES" in answer.json()["error"]["message"]
    tenant.survived()


@pytest.mark.parametrize(
    "route",
    [*REQUIRE_ROUTES.values(), "return (await import('{m}')).default"],
    ids=[*REQUIRE_ROUTES.keys(), "import()"],
)
@pytest.mark.parametrize("module", ["process", "node:process"])
def test_process_by_every_route_is_the_packages_stand_in(tenant: Tenant, route: str, module: str) -> None:
    verdict = contained(tenant, route.format(m=module))
    assert verdict["reached"] == "object", verdict


def test_a_name_that_changes_between_reads_is_read_once(tenant: Tenant) -> None:
    code = (
        "let n = 0; const m = require({ toString() { return n++ ? 'fs' : 'util' } }); return typeof "
        "m.readFileSync"
    )
    answer = tenant.attack(code)
    assert answer.json()["result"] == "undefined", answer.text  # it got util, checked and loaded as util
    tenant.survived()


@pytest.mark.parametrize("target", PATH_REQUIRES)
def test_require_of_a_path_or_a_disguised_name_is_refused(tenant: Tenant, target: str) -> None:
    # Through a variable: the save's package detection would otherwise try to install the name.
    answer = tenant.attack(f"const name = {target!r}; return require(name)")
    assert answer.status_code == 422, answer.text
    assert "require(" in answer.json()["error"]["message"]
    tenant.survived()


@pytest.mark.parametrize("payload", DYNAMIC_IMPORTS.values(), ids=DYNAMIC_IMPORTS.keys())
def test_dynamic_import_is_refused(tenant: Tenant, payload: str) -> None:
    verdict = contained(tenant, payload)
    assert "refused" in verdict, verdict


def test_the_fake_process_of_packages_is_not_the_host_one(tenant: Tenant) -> None:
    # Without packages, the only `process` a function could meet is none at all; with `require` on a
    # builtin, the builtin is frozen and hands out nothing that leads back.
    code = (
        "const util = require('util'); const before = util.format;"
        "try { util.format = () => 'patched' } catch {}"
        "return [util.format === before, Object.isFrozen(util), "
        "Object.isFrozen(Object.getPrototypeOf(console))]"
    )
    assert tenant.attack(code).json()["result"] == [True, True, True]
    tenant.survived()


# A body that closes its wrapper early parses inside the wrapper (a comma expression) and would run when
# the worker loads the script, before any run. The save refuses it; the realm is also sealed before the
# script loads, as a second wall.
LOAD_TIME_BREAKOUTS = {
    "the host Function": (
        "}, (cache.got = (() => { try { return console.log.constructor('return process')() }"
        " catch (e) { return String(e.message) } })()), function () {"
    ),
    "a getter on the host Object.prototype": (
        "}, (cache.got = (() => { try { const proto = Object.getPrototypeOf(console);"
        " Object.defineProperty(proto, 'noDeprecation', { get() { cache.got = this } }); return 'planted' }"
        " catch (e) { return String(e.message) } })()),"
        " function () {"
    ),
    "a statement after the wrapper": "return 1\n}); (function () {",
}


@pytest.mark.parametrize("breakout", LOAD_TIME_BREAKOUTS.values(), ids=LOAD_TIME_BREAKOUTS.keys())
def test_code_that_closes_its_function_early_is_refused_at_save(tenant: Tenant, breakout: str) -> None:
    saved = tenant.save("breakout", {"report": "return 'report'", "breakout": breakout})
    assert saved.status_code == 400, saved.text
    error = saved.json()["error"]
    assert (error["type"], error["function"]) == ("CompileError", "breakout"), saved.text
    assert "closes its function early" in error["message"]
    tenant.survived()
