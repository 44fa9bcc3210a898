"""CPU-bound JavaScript as a function against the same code in plain node (issue 11).

    .venv/bin/python bench/bench_cpu_js.py [--repeats 5] [--rounds 2] [--heap-mb 512] [--only NAME,...]
                                           [--before CHECKOUT]

Each snippet times itself (`performance.now()` around its own work, so HTTP and the answer's JSON are
not counted) and runs `repeats` times after one warm-up run: in a plain `node` process, and as a
function of one workspace of a real `functions serve` (a warm worker). Snippet by snippet, plain node and
the function take turns `rounds` times, so both see the same load on the machine. The medians of all
their runs and their ratio are printed (the target is 1.25x), and the best run of each. Both get the
same heap limit (--heap-mb: the workers' NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB, node's
--max-old-space-size), since a limit alone costs allocation-heavy code 1.3-1.4x in more garbage
collections, in plain node too. With --before, the same functions also run on the service of another
checkout (the code before the change: `git archive <commit> | tar -x -C /tmp/before`), with plain node
measured again next to it.
"""

import argparse
import json
import os
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_service import serving

ROOT = Path(__file__).resolve().parent.parent
SERVE = "from entrypoints.cli.main import main; raise SystemExit(main(['serve']))"
TARGET = 1.25

# Each is the body of an async function; the harness around it returns its own time in ms.
SNIPPETS = {
    "array methods": """
const a = Array.from({ length: 1000 }, (_, i) => i);
let n = 0;
for (let k = 0; k < 20000; k++) n += a.filter((x) => x % 3).map((x) => x * 2).slice(10, 600).length;
""",
    "promise chain": """
let p = Promise.resolve(0);
for (let i = 0; i < 1000000; i++) p = p.then((x) => x + 1);
await p;
""",
    "await": """
const step = async (x) => x + 1;
let s = 0;
for (let i = 0; i < 1000000; i++) s = await step(s);
""",
    "JSON": """
const doc = { id: 1, name: 'widget', tags: ['a', 'b', 'c'], price: 12.5, stock: { here: 3, there: null },
  history: Array.from({ length: 20 }, (_, i) => ({ at: i, what: 'event ' + i })) };
let n = 0;
for (let i = 0; i < 100000; i++) n += JSON.parse(JSON.stringify(doc)).history.length;
""",
    "regular expressions": """
const text = 'user=alice id=123 mail=alice@example.com; user=bob id=456 mail=bob@example.org; '.repeat(20);
let n = 0;
for (let i = 0; i < 5000; i++) {
  n += text.replace(/\\d+/g, '#').split(/;\\s*/).length + (text.match(/[\\w.]+@[\\w.]+/g) || []).length;
  n += /mail=(\\w+)@/.exec(text)[1].length + text.matchAll(/user=(\\w+)/g).next().value[1].length;
}
""",
    "classes": """
class Shape { constructor(w, h) { this.w = w; this.h = h; } area() { return this.w * this.h; }
  get kind() { return 'shape'; } }
class Square extends Shape { constructor(s) { super(s, s); } area() { return super.area() + 0; }
  get kind() { return 'square'; } }
let total = 0;
for (let i = 0; i < 10000000; i++) { const s = i % 2 ? new Square(i % 7) : new Shape(i % 5, 3);
  total += s.area() + s.kind.length; }
""",
    "sort": """
for (let k = 0; k < 20; k++) {
  const rows = Array.from({ length: 50000 }, (_, i) =>
    ({ id: i, score: (i * 7919) % 10007, name: 'n' + (i % 97) }));
  rows.sort((a, b) => a.score - b.score || a.name.localeCompare(b.name));
  const numbers = rows.map((r) => r.score);
  numbers.sort((a, b) => b - a);
}
""",
    "Math and globals": """
let s = 0;
for (let i = 0; i < 20000000; i++) {
  s += Math.max(i & 7, 3) + Math.floor(i / 3) + (Number.isInteger(i) ? 1 : 0);
}
""",
    "backtracking solver": """
// A plain sudoku backtracking solver as found in tutorials (arrays, some, includes, slice, Math), on
// Arto Inkala's puzzle, ten times.
for (let round = 0; round < 10; round++) {
  const puzzle = '800000000003600000070090000050007000000045700000100030001000068008500010090000400';
  const cells = puzzle.split('').map(Number);
  const rows = Array.from({ length: 9 }, (_, r) => cells.slice(r * 9, r * 9 + 9));
  const box = (i) => Math.floor(i / 3) * 3;
  const valid = (r, c, n) =>
    !rows[r].includes(n) && !rows.some((row) => row[c] === n) &&
    !rows.slice(box(r), box(r) + 3).some((row) => row.slice(box(c), box(c) + 3).includes(n));
  const solve = () => {
    for (let r = 0; r < 9; r++) for (let c = 0; c < 9; c++) {
      if (rows[r][c] !== 0) continue;
      for (let n = 1; n <= 9; n++) {
        if (!valid(r, c, n)) continue;
        rows[r][c] = n;
        if (solve()) return true;
        rows[r][c] = 0;
      }
      return false;
    }
    return true;
  };
  if (!solve()) throw new Error('no solution');
}
""",
}


def timed(body: str) -> str:
    return f"const started = performance.now();\n{body}\nreturn performance.now() - started;"


PLAIN = """
const [body, repeats] = [process.argv[1], Number(process.argv[2])];
const fn = new (async function () {}).constructor(body);
(async () => {
  await fn(); // warm-up, as the function's first run
  const times = [];
  for (let i = 0; i < repeats; i++) times.push(await fn());
  console.log(JSON.stringify(times));
})();
"""


def plain_node(body: str, repeats: int, heap_mb: int) -> list[float]:
    argv = ["node", f"--max-old-space-size={heap_mb}", "-e", PLAIN, timed(body), str(repeats)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    times: list[float] = json.loads(done.stdout)
    return times


@contextmanager
def service(root: Path, heap_mb: int) -> Iterator[httpx.Client]:
    settings = {"FUNCTIONS_RUN_TIMEOUT": "600000", "NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB": str(heap_mb)}
    with serving(settings, root=root, timeout_s=900) as client:
        yield client


def save(client: httpx.Client, names: list[str]) -> dict[str, str]:
    """One workspace holding every snippet as a function; returns snippet -> function name."""
    functions = {f"f{index}": name for index, name in enumerate(names)}
    body = {"functions": {fn: {"code": timed(SNIPPETS[name])} for fn, name in functions.items()}}
    answer = client.post("/v2/functions/cpu", json=body)
    assert answer.status_code == 200, answer.text
    return {name: fn for fn, name in functions.items()}


def as_function(client: httpx.Client, function: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats + 1):  # the first is the warm-up
        answer = client.post(f"/v2/functions/cpu/run/{function}", json={})
        assert answer.status_code == 200, answer.text
        times.append(float(answer.json()["result"]))
    return times[1:]


Figures = dict[str, tuple[list[float], list[float]]]


def measure(root: Path, names: list[str], args: argparse.Namespace) -> Figures:
    """snippet -> (its times in plain node, its times as a function), in ms."""
    figures = {}
    with service(root, args.heap_mb) as client:
        functions = save(client, names)
        for name in names:
            plain: list[float] = []
            served: list[float] = []
            for _ in range(args.rounds):
                plain += plain_node(SNIPPETS[name], args.repeats, args.heap_mb)
                served += as_function(client, functions[name], args.repeats)
            figures[name] = (plain, served)
    return figures


def report(title: str, figures: Figures) -> None:
    print(f"\n{title}")
    print(f"| {'snippet':<20} | plain node ms | function ms | function / node | best: node, function |")
    print(f"|{'-' * 22}|---------------|-------------|-----------------|----------------------|")
    for name, (plain, served) in figures.items():
        ratio = statistics.median(served) / statistics.median(plain)
        best = f"{min(plain):.1f}, {min(served):.1f} ms"
        verdict = "" if ratio <= TARGET else f"  (over {TARGET}x)"
        print(
            f"| {name:<20} | {statistics.median(plain):13.1f} | {statistics.median(served):11.1f} |"
            f" {ratio:14.2f}x | {best:>20} |{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--heap-mb", type=int, default=512)
    parser.add_argument("--only", help="comma-separated snippet names")
    parser.add_argument("--before", type=Path, help="a checkout whose service is measured too")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SNIPPETS)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    runs = args.repeats * args.rounds
    print(
        f"node {node}, {os.cpu_count()} CPUs, heap limit {args.heap_mb} MiB, medians of {runs} runs,"
        " each batch after a warm-up"
    )
    if args.before:
        report(f"before ({args.before})", measure(args.before.resolve(), names, args))
    report(f"this checkout ({ROOT})", measure(ROOT, names, args))


if __name__ == "__main__":
    main()
