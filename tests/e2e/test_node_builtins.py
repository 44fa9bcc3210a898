"""Node builtins handed to functions work whole after the host realm is frozen (runtimes/node/harden.mjs).

Node defines some exports lazily (`require('buffer').Blob`, `File`, `resolveObjectURL`,
`require('util').MIMEType`): a getter that redefines itself on first read, which a frozen object refused
("Cannot redefine property: Blob"), breaking safer-buffer, iconv-lite and cheerio. Every export of every
handed-in builtin reads now, and the modules are still frozen.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.node.runtime import NodeRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.model import Json, Language, Status
from tests.contract.test_runtime_contract import node_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.node]

DEFAULTS = ["http", "https", "url", "util", "zlib", "dns", "stream", "buffer", "crypto"]
MORE = ["events", "string_decoder", "querystring", "path", "assert", "timers", "perf_hooks", "punycode"]
SUBPATHS = ["stream/promises", "timers/promises", "util/types", "dns/promises", "path/posix"]


@pytest.fixture
async def service() -> AsyncIterator[Workspaces]:
    runtime: NodeRuntime = node_runtime(timeout_ms=5000, builtin_modules=DEFAULTS + MORE)
    await runtime.start()
    try:
        yield Workspaces(InMemoryStore(), {Language.NODEJS: runtime})
    finally:
        await runtime.aclose()


async def result_of(service: Workspaces, code: str, params: Any = None) -> Json:
    await service.save(workspace_from_body("w", {"functions": {"f": {"code": code}}}))
    outcome = await service.run("w", "f", params)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    return outcome.result


async def test_buffer_blob_file_and_object_urls_work(service: Workspaces) -> None:
    code = """
    const buffer = require('buffer');
    const blob = new buffer.Blob(['ab', 'c']);
    const file = new buffer.File(['x'], 'a.txt', { type: 'text/plain' });
    return [typeof buffer.Blob, blob.size, await blob.text(), new Blob(['x']).size, file.name, file.size,
      typeof buffer.resolveObjectURL, buffer.Blob === Blob, require('node:buffer').File === buffer.File];
    """
    assert await result_of(service, code) == ["function", 3, "abc", 1, "a.txt", 1, "function", True, True]


async def test_every_export_of_every_builtin_reads_and_the_modules_stay_frozen(service: Workspaces) -> None:
    code = """
    const failures = [];
    for (const name of parameters.modules) {
      try {
        const exports = require(name);
        for (const key of Reflect.ownKeys(exports)) exports[key];
        const copy = {};
        for (const key in exports) copy[key] = exports[key]; // what safer-buffer does with 'buffer'
        if (!Object.isFrozen(exports)) failures.push(`${name} is not frozen`);
      } catch (error) {
        failures.push(`${name}: ${error.message}`);
      }
    }
    return failures;
    """
    assert await result_of(service, code, {"modules": DEFAULTS + MORE + SUBPATHS}) == []


async def test_lazy_exports_of_other_builtins_work(service: Workspaces) -> None:
    code = """
    const util = require('util');
    return [new util.MIMEType('text/html; charset=utf-8').essence, String(new util.MIMEParams()),
      typeof require('dns').promises.lookup, await require('timers/promises').setTimeout(1, 'slept')];
    """
    assert await result_of(service, code) == ["text/html", "", "function", "slept"]


async def test_a_safer_buffer_style_copy_of_buffer_works(service: Workspaces) -> None:
    # safer-buffer (under iconv-lite and cheerio) copies every key of 'buffer' and of its Buffer.
    code = """
    const buffer = require('buffer');
    const safer = {};
    for (const key in buffer) if (key !== 'Buffer' && key !== 'SlowBuffer') safer[key] = buffer[key];
    const Safer = safer.Buffer = {};
    for (const key in buffer.Buffer) if (!key.startsWith('allocUnsafe')) Safer[key] = buffer.Buffer[key];
    return [Object.keys(safer).includes('Blob'), Safer.from('hi').toString('hex')];
    """
    assert await result_of(service, code) == [True, "6869"]


async def test_host_constructors_keep_their_prototypes(service: Workspaces) -> None:
    # `EventEmitter.prototype = {...}` would give classes Node defines later (undici's, on the first
    # fetch) a prototype of the workspace's making: every host function's `prototype` is read-only.
    code = """
    const EventEmitter = Object.getPrototypeOf(require('http').Agent);
    const { Readable, Writable, Stream } = require('stream');
    const refused = [];
    for (const ctor of [EventEmitter, Readable, Writable, Stream, require('http').Agent]) {
      try {
        (() => { 'use strict'; ctor.prototype = {}; })();
      } catch (error) {
        refused.push(error instanceof TypeError);
      }
    }
    return refused;
    """
    assert await result_of(service, code) == [True] * 5


async def test_web_streams_are_globals_and_no_channel_reaches_other_workspaces(
    service: Workspaces,
) -> None:
    code = (
        "const names = ['ReadableStream', 'TransformStream', 'TextDecoderStream', 'File', 'MessagePort',"
        " 'DOMException', 'BroadcastChannel', 'MessageChannel'];"
        " const chunks = []; await new ReadableStream({ start(c) { c.enqueue('a'); c.close() } })"
        ".pipeTo(new WritableStream({ write(chunk) { chunks.push(chunk) } }));"
        " return [names.map((name) => typeof globalThis[name]), chunks];"
    )
    types, chunks = await result_of(service, code)
    # BroadcastChannel would carry messages between workers, so between workspaces; no port is made here.
    assert types == ["function"] * 6 + ["undefined"] * 2
    assert chunks == ["a"]
