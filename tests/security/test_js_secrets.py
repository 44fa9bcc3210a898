"""Reading the service's secrets from a JavaScript function: a canary planted in the service's environment
(SECRET_CANARY, NPM_CONFIG__AUTH) and its API key must not show up in any answer, by any route."""

import pytest

from tests.security.conftest import API_KEY, CANARY, Tenant

pytestmark = pytest.mark.node

# Each payload returns (or logs, or throws) whatever it could gather; none of it may hold a secret.
ROUTES = {
    "process.env": "return process.env",
    "globalThis.process.env": "return globalThis.process?.env",
    "require('process')": "const p = 'process'; return require(p).env",
    "fs /proc/self/environ": "const m = 'fs'; return require(m).readFileSync('/proc/self/environ', 'utf8')",
    "os": "const m = 'os'; return require(m).userInfo()",
    "child_process": "const m = 'child_process'; return require(m).execSync('env').toString()",
    "fetch file:": "return await (await fetch('file:///proc/self/environ')).text()",
    "fetch file: of the parent": "return await (await fetch('file:///proc/' + 1 + '/environ')).text()",
    "every global, inspected": (
        "return require('util').inspect(globalThis, { showHidden: true, depth: 4, getters: true })"
    ),
    "every global's keys": "return Object.getOwnPropertyNames(globalThis).map((k) => k + '=' + "
    "String(globalThis[k]))",
    "builtin modules, inspected": (
        "return ['util', 'http', 'https', 'url', 'zlib', 'dns', 'stream', 'buffer', 'crypto']"
        ".map((m) => require('util').inspect(require(m), { showHidden: true, depth: 3, getters: true }))"
    ),
    "http.globalAgent options": "return require('util').inspect(require('http').globalAgent, { depth: 5 })",
    "performance": "return JSON.stringify(performance.toJSON()) + JSON.stringify(performance.timeOrigin)",
    "dns servers": "return require('dns').getServers()",
    "an error's stack": "try { null.x } catch (e) { return e.stack }",
    "a host error's stack": "try { Buffer.alloc(-1) } catch (e) { return e.stack + JSON.stringify(e) }",
    "console.log of everything": "console.log(globalThis, require('http'), require('crypto')); return 1",
    "a thrown non-error": "throw globalThis",
    "the context's own environment": "return [typeof env, typeof ENV, typeof Deno, typeof Bun, typeof "
    "navigator]",
    "the deprecation gadget": (
        "let p; Object.defineProperty(Object.getPrototypeOf(console), 'noDeprecation', { configurable: true,"
        " get() { p = p || this } }); new Buffer(1); await new Promise((r) => setTimeout(r, 5));"
        " if (!p) return 'contained'; const io = { type: 'pipe', readable: true, writable: true };"
        " const r = p.binding('spawn_sync').spawn({ file: '/bin/cat', args: ['cat', "
        "`/proc/${p.ppid}/environ`],"
        " stdio: [io, io, io], envPairs: [] }); return String(r.output && r.output[1])"
    ),
    "the service API without a key": (
        "const r = await fetch(parameters.url + '/v2/functions/victim'); return [r.status, await r.text()]"
    ),
    "the service's metrics and health": (
        "const a = await fetch(parameters.url + '/metrics'); const b = await fetch(parameters.url + "
        "'/sys/healthcheck');"
        " return [await a.text(), await b.text()]"
    ),
}


@pytest.mark.parametrize("payload", ROUTES.values(), ids=ROUTES.keys())
def test_no_route_reads_a_planted_secret(tenant: Tenant, payload: str) -> None:
    assert tenant.save("victim", {"hello": "return 'x'"}).status_code == 200
    answer = tenant.attack(payload, {"url": tenant.url})
    assert answer.status_code in (200, 422), answer.text
    assert CANARY not in answer.text
    assert API_KEY not in answer.text
    assert "canary-" not in answer.text
    tenant.survived()


def test_a_function_cannot_reach_the_service_with_or_without_the_key(tenant: Tenant) -> None:
    code = (
        "try { const r = await fetch(parameters.url + '/v2/functions'); return r.status }"
        " catch (err) { return err.cause.message }"
    )
    refused = tenant.attack(code, {"url": tenant.url}).json()["result"]
    assert "refused by the egress policy" in refused and "FUNCTIONS_EGRESS" in refused
    tenant.survived()
