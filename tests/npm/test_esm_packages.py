"""ES modules in the Node sandbox (issue 11): ES-module-only, dual and CommonJS packages through require()
and import(), the builtin rules inside ES modules, the packages' stand-in `process`, and import() in a
function's code installing at save. Real npm, real Node host, packages from a registry started here."""

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.npm.rules import PackageRules, required_packages
from domain.errors import DependencyError
from domain.model import Function, Json, Status, Workspace
from entrypoints.settings import NODE_BUILTINS
from tests.npm.registry import LocalRegistry, local_registry
from tests.npm.test_npm_dependencies import Kit, kit_at

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed"),
]
MODULE: dict[str, Json] = {"type": "module"}


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with local_registry() as started:
        started.publish(
            "esm-only",
            "1.0.0",
            {
                "index.js": "import { shout } from './lib/shout.js';\n"
                "export const greet = (name) => shout(`hi ${name}`);\nexport default 'the default';",
                "lib/shout.js": "export const shout = (text) => text.toUpperCase();",
            },
            exports={".": {"types": "./index.d.ts", "default": "./index.js"}},
            **MODULE,
        )
        started.publish(
            "dual",
            "1.0.0",
            {"esm.mjs": "export const kind = 'import';", "cjs.cjs": "exports.kind = 'require';"},
            exports={".": {"import": "./esm.mjs", "require": "./cjs.cjs"}},
        )
        started.publish("common", "1.0.0", {"index.js": "module.exports = { add: (a, b) => a + b };"})
        started.publish(
            "loads-walled-builtins",
            "1.0.0",
            {
                "index.js": "const fs = require('fs'), os = require('os'), tty = require('tty');\n"
                "const net = require('net'), tls = require('tls'), fsp = require('fs/promises');\n"
                "const { AsyncResource } = require('async_hooks');\n"
                "const tryIt = (f) => { try { return f(); } catch (e) { return e.message; } };\n"
                "module.exports = () => ({ exists: fs.existsSync('/etc/passwd'), host: os.hostname(),\n"
                "  nics: os.networkInterfaces(), tty: tty.isatty(1), ip: net.isIP('10.0.0.1'),\n"
                "  read: tryIt(() => fs.readFileSync('/etc/passwd', 'utf8')),\n"
                "  socket: tryIt(() => new net.Socket({ fd: 1 })), tls: tryIt(() => tls.connect(443)),\n"
                "  same: fsp === fs.promises,\n"
                "  scope: new AsyncResource('x').runInAsyncScope((a) => a + 1, null, 1) });",
            },
        )
        started.publish(
            "esm-on-common",
            "1.0.0",
            {
                "index.mjs": "import common, { add } from 'common';\n"
                "export const sum = add(1, 2);\nexport const same = common.add === add;"
            },
            dependencies={"common": "^1.0.0"},
            main="index.mjs",
        )
        started.publish(
            "esm-reads-files",
            "1.0.0",
            {"index.js": "import { readFileSync } from 'node:fs';\nexport default readFileSync;"},
            **MODULE,
        )
        started.publish(
            "esm-spawns",
            "1.0.0",
            {"index.js": "import { spawn } from 'node:child_process';\nexport default spawn;"},
            **MODULE,
        )
        started.publish(
            "esm-uses-builtins",
            "1.0.0",
            {
                "index.js": "import path from 'node:path';\nimport { EventEmitter } from 'events';\n"
                "import { StringDecoder } from 'string_decoder';\nimport assert from 'node:assert';\n"
                "assert.ok(true);\nexport const joined = path.join('a', 'b');\n"
                "export const emitter = typeof EventEmitter;\n"
                "export const decoded = new StringDecoder('utf8').write(Buffer.from('é'));"
            },
            **MODULE,
        )
        started.publish(
            "talks",
            "1.0.0",
            {
                "index.js": "const p = require('process');\nconst q = require('node:process');\n"
                "p.stderr.write('debug: to stderr\\n');\nq.stdout.write(Buffer.from('to stdout'));\n"
                "module.exports = { same: p === process && q === p, env: p.env.NODE_ENV,"
                " exit: typeof p.exit, binding: typeof p.binding };"
            },
        )
        started.publish(
            "esm-reads-process",
            "1.0.0",
            {"index.js": "export const mode = process.env.NODE_ENV;"},  # the global, as Node's ESM has it
            **MODULE,
        )
        started.publish(
            "waits",
            "1.0.0",
            {"index.js": "await new Promise((done) => setTimeout(done, 5));\nexport const ready = 'yes';"},
            **MODULE,
        )
        started.publish(
            "cycle",
            "1.0.0",
            {
                "a.js": "import { b } from './b.js';\nexport function a() { return 'a' + b(); }",
                "b.js": "import { a } from './a.js';\nexport function b() { return 'b'; }\n"
                "export const viaA = () => a();",
            },
            main="a.js",
            **MODULE,
        )
        started.publish(
            "mapped",
            "1.0.0",
            {"index.js": "export { value } from '#internal';", "src/internal.js": "export const value = 7;"},
            imports={"#internal": "./src/internal.js"},
            exports="./index.js",
            **MODULE,
        )
        started.publish(
            "loads-later",
            "1.0.0",
            {"index.js": "module.exports = async () => (await import('esm-only')).greet('later');"},
            dependencies={"esm-only": "^1.0.0"},
        )
        started.publish(
            "esm-throws",
            "1.0.0",
            {"index.js": "export function boom() {\n  throw new Error('boom');\n}"},
            **MODULE,
        )
        started.publish(
            "no-type",
            "1.0.0",
            {"index.js": "export const detected = 'by its syntax';"},  # no "type": Node 22 detects it
        )
        yield started


@pytest.fixture
async def kit(tmp_path: Path, registry: LocalRegistry) -> AsyncIterator[Kit]:
    async with kit_at(tmp_path, registry.url, builtins=list(NODE_BUILTINS)) as started:
        yield started


async def failure(kit: Kit, code: str) -> str:
    await kit.save("w", code)
    outcome = await kit.run("w")
    assert outcome.status is Status.FAILED and outcome.error is not None, outcome
    message: str = outcome.error["message"]
    return message


async def test_an_es_module_only_package_loads_by_require_and_by_import_as_one_instance(kit: Kit) -> None:
    code = (
        "const required = require('esm-only'); const imported = await import('esm-only');"
        " return [required.greet('you'), required.default, imported.greet('me'), required === imported];"
    )
    await kit.save("w", code)
    assert await kit.result("w") == ["HI YOU", "the default", "HI ME", True]


async def test_a_dual_package_gives_require_its_require_entry_and_import_its_import_entry(kit: Kit) -> None:
    await kit.save("w", "return [require('dual').kind, (await import('dual')).kind];")
    assert await kit.result("w") == ["require", "import"]


async def test_a_commonjs_package_through_import_has_a_default_and_named_exports(kit: Kit) -> None:
    code = (
        "const ns = await import('common');"
        " return [ns.default.add(1, 2), ns.add(2, 3), ns.default === require('common')];"
    )
    await kit.save("w", code)
    assert await kit.result("w") == [3, 5, True]


async def test_an_es_module_imports_a_commonjs_package_by_default_and_by_name(kit: Kit) -> None:
    await kit.save("w", "const m = require('esm-on-common'); return [m.sum, m.same];")
    assert await kit.result("w") == [3, True]


async def test_a_commonjs_package_imports_an_es_module(kit: Kit) -> None:
    await kit.save("w", "return await require('loads-later')();")
    assert await kit.result("w") == "HI LATER"


async def test_module_features_cycles_imports_maps_and_syntax_detection(kit: Kit) -> None:
    code = (
        "const c = require('cycle'); const mapped = await import('mapped');"
        " return [c.a(), mapped.value, require('no-type').detected];"
    )
    await kit.save("w", code)
    assert await kit.result("w") == ["ab", 7, "by its syntax"]


async def test_an_es_modules_import_of_a_refused_builtin_is_refused_naming_the_setting(kit: Kit) -> None:
    for code in ("return require('esm-spawns');", "return await import('esm-spawns');"):
        message = await failure(kit, code)
        assert (
            "'esm-spawns'" in message and "'child_process'" in message and "NODE_BUILTIN_MODULES" in message
        )
        assert "node_modules/esm-spawns/index.js" in message
        assert "add it" not in message  # it would open a wall: the message says why, and advises nothing


async def test_an_es_module_importing_fs_gets_the_inert_stand_in(kit: Kit) -> None:
    for code in (
        "return require('esm-reads-files').default('/etc/passwd');",
        "return (await import('esm-reads-files')).default('/etc/passwd');",
    ):
        message = await failure(kit, code)
        assert message.startswith(
            "fs.readFileSync() is not available to functions: it reads the host's files"
        )


async def test_the_builtins_allowed_by_default_load_in_es_modules(kit: Kit) -> None:
    await kit.save("w", "const m = require('esm-uses-builtins'); return [m.joined, m.emitter, m.decoded];")
    assert await kit.result("w") == ["a/b", "function", "é"]


async def test_a_package_requiring_process_gets_the_stand_in_writing_to_the_runs_logs(kit: Kit) -> None:
    await kit.save("w", "return require('talks');")
    outcome = await kit.run("w")
    assert outcome.result == {"same": True, "env": "production", "exit": "undefined", "binding": "undefined"}
    assert [(entry.level, entry.message) for entry in outcome.logs] == [
        ("error", "debug: to stderr"),
        ("log", "to stdout"),
    ]


async def test_packages_get_inert_stand_ins_of_walled_builtins_and_functions_get_the_refusal(
    kit: Kit,
) -> None:
    await kit.save("w", "return require('loads-walled-builtins')();")
    got = await kit.result("w")
    assert isinstance(got, dict)
    walled = "is not available to functions"
    assert (got["exists"], got["host"], got["nics"], got["tty"], got["ip"]) == (
        False,
        "functions",
        {},
        False,
        4,
    )
    assert walled in got["read"] and "files" in got["read"]
    assert walled in got["socket"] and "descriptors" in got["socket"] and walled in got["tls"]
    assert got["same"] is True and got["scope"] == 2
    for builtin in ("fs", "os", "tty", "net"):  # the function's own code is told, not handed a stand-in
        assert "NODE_BUILTIN_MODULES" in await failure(kit, f"return require('{builtin}');")


async def test_an_es_module_reading_the_process_global_gets_the_stand_in(kit: Kit) -> None:
    await kit.save("w", "return [require('esm-reads-process').mode, typeof process];")
    assert await kit.result("w") == ["production", "undefined"]  # functions still have no `process`


async def test_top_level_await_is_refused_by_require_with_a_clear_error_and_loads_by_import(kit: Kit) -> None:
    message = await failure(kit, "return require('waits').ready;")
    assert "top-level await" in message and "await import('waits')" in message
    await kit.save("w", "const m = await import('waits'); return [m.ready, require('waits').ready];")
    assert await kit.result("w") == ["yes", "yes"]  # once it has finished, require() finds it


async def test_stack_frames_in_an_es_module_name_its_file(kit: Kit) -> None:
    await kit.save("w", "require('esm-throws').boom();")
    outcome = await kit.run("w")
    assert outcome.error is not None and outcome.error["message"] == "boom"
    assert "at Module.boom (node_modules/esm-throws/index.js:2:9)" in outcome.error["stack"]


async def test_import_in_a_functions_code_installs_the_package_at_save(kit: Kit) -> None:
    await kit.save("w", "const { greet } = await import(\"esm-only\"); return greet('x');")
    assert kit.version("w", "esm-only") == "1.0.0" and await kit.result("w") == "HI X"


async def test_functions_import_packages_and_builtins_by_name_only(kit: Kit) -> None:
    assert "by name, not files" in await failure(kit, "const f = './x.js'; return await import(f);")
    message = await failure(kit, "const m = 'vm'; return await import(m);")
    assert message.startswith("import('vm') is refused") and "NODE_BUILTIN_MODULES" in message
    assert "add it" not in message
    message = await failure(kit, "const m = 'http2'; return await import(m);")
    assert "NODE_BUILTIN_MODULES" in message and "add it there to allow it" in message


async def test_the_lists_apply_to_import_at_save(tmp_path: Path, registry: LocalRegistry) -> None:
    async with kit_at(tmp_path, registry.url, rules=PackageRules(allow=["dual"], deny=["common"])) as kit:
        with pytest.raises(DependencyError, match="NODEJS_PACKAGES_WHITELIST_IMPORT") as refused:
            await kit.save("w", "return await import('esm-only');")
        assert refused.value.details["package"] == "esm-only"
        with pytest.raises(DependencyError, match="'common' is refused.*BLACKLIST"):
            await kit.save("w", "return import('common');")


def test_import_with_a_literal_names_a_package_as_require_does() -> None:
    code = (
        "await import('a'); await import(\"@s/b/sub\", { with: { type: 'json' } }); require(`c`);"
        " x.import('not-a'); import(name); import('./file.js'); import('node:fs'); import('data:text/x,1');"
    )
    assert required_packages(Workspace("w", {"f": Function(code)})) == ["@s/b", "a", "c"]


@pytest.mark.registry
async def test_es_module_only_packages_from_the_real_registry(tmp_path: Path) -> None:
    code = (
        "const { nanoid } = require('nanoid'); const pLimit = (await import('p-limit')).default;"
        " const limit = pLimit(1); return [nanoid().length, await limit(async () => 'limited'),"
        " require('uuid').validate(require('uuid').v4())];"
    )
    async with kit_at(tmp_path, None, builtins=list(NODE_BUILTINS)) as kit:
        await kit.save("w", code)
        assert await kit.result("w") == [21, "limited", True]
