"""User code runs at plain node's speed in a workspace's worker, hardened host realm and all.

Two causes made functions 5-300x slower than plain node, both checked here on the real worker
(runtimes/node/worker.mjs, in a worker thread as the host starts it, without the host's protocol):
- V8's protectors (isolate-wide facts that keep its fast paths: array species, iterators, promise
  `then`) were turned off by the hardening of the host realm; they must all hold after hardening, after
  every default builtin was required and after `fetch` loaded;
- every global name (`Math`, `JSON`, `Array`) was looked up through the vm context's interceptor.
AsyncLocalStorage (a run's logs) costs every promise: it is on only while runs overlap.
The bench with the figures is bench/bench_cpu_js.py.
"""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.node

WORKER = Path(__file__).resolve().parents[2] / "runtimes" / "node" / "worker.mjs"
DRIVER = Path(__file__).with_name("js_speed_driver.mjs")
BUILTINS = ["http", "https", "url", "util", "zlib", "dns", "stream", "buffer", "crypto"]
PROTECTORS = [
    "ArraySpeciesProtector",
    "ArrayIteratorProtector",
    "MapIteratorProtector",
    "SetIteratorProtector",
    "StringIteratorProtector",
    "IsConcatSpreadableProtector",
    "TypedArraySpeciesProtector",
    "PromiseSpeciesProtector",
    "RegExpSpeciesProtector",
]
# Each returns its own time in ms; before the fixes they ran 5x (arrays), 10x (regular expressions) and
# 300x (a global name in a loop) slower than plain node.
SNIPPETS = {
    "global names": (
        "let s = 0; for (let i = 0; i < 1e7; i++) s += Math.max(i, 1) + (Number.isInteger(i) ? 1 : 0);"
    ),
    "array methods": (
        "const a = Array.from({ length: 1000 }, (_, i) => i); let s = 0;"
        " for (let k = 0; k < 5000; k++) s += a.filter((x) => x % 2).map((x) => x * 2).slice(10, 500).length;"
    ),
    "promise chain": (
        "let p = Promise.resolve(0); for (let i = 0; i < 3e5; i++) p = p.then((x) => x + 1); await p;"
    ),
    "await": "let s = 0; for (let i = 0; i < 3e5; i++) s += await i;",
    "regular expressions": (
        "const text = 'abc123def456 '.repeat(50); let n = 0;"
        " for (let i = 0; i < 2000; i++) n += text.replace(/\\d+/g, 'x').split(/\\s+/).length;"
    ),
    "JSON": (
        "const o = { a: [1, 2, { b: 'x' }], c: { d: 1.5 } };"
        " for (let i = 0; i < 5e4; i++) JSON.parse(JSON.stringify(o));"
    ),
}


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    setup = {"worker": WORKER.as_uri(), "builtins": BUILTINS, "protectors": PROTECTORS, "snippets": SNIPPETS}
    done = subprocess.run(
        ["node", "--allow-natives-syntax", str(DRIVER), json.dumps(setup)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    measured: dict[str, Any] = json.loads(done.stdout)
    return measured


def test_hardening_keeps_every_protector_of_v8(measured: dict[str, Any]) -> None:
    assert measured["protectors"] == dict.fromkeys(PROTECTORS, True)


@pytest.mark.parametrize("snippet", SNIPPETS)
def test_user_code_runs_about_as_fast_as_in_plain_node(measured: dict[str, Any], snippet: str) -> None:
    in_worker, in_node = (float(ms) for ms in measured["times"][snippet])
    # The bench asks for 1.25x; a test on a busy machine gets room, still far below the old 5-300x.
    assert in_worker < 2.0 * in_node + 5, (
        f"{snippet}: {in_worker:.1f} ms in a function, {in_node:.1f} ms in node"
    )
