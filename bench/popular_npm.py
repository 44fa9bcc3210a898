"""Which of 60 popular npm packages work as JavaScript functions of the service, at its default settings.

    .venv/bin/python bench/popular_npm.py [--only lodash,axios] [--json out.json] [--parallel 3] [--control]

Starts a real service (`functions serve`, LOG_LEVEL=error, NPM_INSTALL_TIMEOUT=300, every other setting at
its default, storage in a new temporary folder) and, for each package, saves two workspaces that name it in
their npm `dependencies` (installed by the service from the npm registry, NPM_CONFIG_REGISTRY if set):
one whose function loads it with `require('pkg')`, one with `await import('pkg')`. Each function really
uses the package and returns a value that is checked. A package counts as working when its own form works:
`require` when the installed version has a CommonJS entry, `import()` when it is an ES module only.

Outcomes: `works`, `save` (the save failed: DependencyError, CompileError...), `run` (the run answered an
error), `wrong` (it ran and returned something else), `error` (no answer: timeout, the service died).

The network packages (axios, node-fetch, got, ky) fetch from an HTTP server the harness starts on
127.0.0.1, reachable through FUNCTIONS_EGRESS_ALLOW=127.0.0.1:<its port> (loopback is refused by default);
no traffic goes anywhere else. `--control` also runs the same code under plain `node` (no service, its own
scratch `npm install`), to tell a wrong expectation of this file from a limit of the service.

Nothing is cached between runs: the storage (and npm's cache in it) is a new temporary folder, removed at
the end with the service stopped (also on errors, Ctrl-C and SIGTERM). Exit status: 0 when every package
was tried (whatever the count), 1 when the harness could not run (the service did not start), 2 on usage.
"""

import argparse
import concurrent.futures
import datetime
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVE = "from entrypoints.cli.main import main; raise SystemExit(main(['serve']))"
NPM_INSTALL_TIMEOUT = 300


@dataclass(frozen=True)
class Case:
    """One package: `body` uses `pkg` (its main export: a CommonJS `module.exports`, an ES module's default
    export, else its namespace) and `mod` (what `require` or `import()` gave), and `base` (the local HTTP
    server's URL); what it returns must equal `expected` once through JSON."""

    name: str
    body: str
    expected: Any
    esm_only: bool = False  # what the latest version was known to be; the installed package.json decides


FETCHED = {"method": "GET", "path": "/hello?x=1"}

# The 60 most downloaded npm packages that a function author would require (monthly downloads, with the
# tool-chain internals such as ansi-styles, @babel/* and glob left out), ES-module-only ones on purpose.
CASES: tuple[Case, ...] = (
    Case("semver", "return [pkg.satisfies('1.2.3', '^1.0.0'), pkg.inc('1.2.3', 'minor')];", [True, "1.3.0"]),
    Case(
        "debug",
        "const log = pkg('bench'); log('not shown'); return [typeof log, log.namespace];",
        ["function", "bench"],
    ),
    Case("chalk", "pkg.level = 1; return pkg.red('x');", "\u001b[31mx\u001b[39m", esm_only=True),
    Case("ms", "return [pkg('2 days'), pkg(60000)];", [172800000, "1m"]),
    Case(
        "ajv",
        "const Ajv = pkg.default || pkg; const validate = new Ajv().compile({type: 'object', "
        "properties: {n: {type: 'integer'}}, required: ['n']}); return [validate({n: 1}), validate({})];",
        [True, False],
    ),
    Case(
        "uuid",
        "return [pkg.v4().length, pkg.validate('6ec0bd7f-11c0-43da-975e-2a8ad9ebae0b'), "
        "pkg.v5('hello', pkg.v5.URL)];",
        [36, True, "074171de-bc84-5ea4-b636-1135477620e1"],
        esm_only=True,
    ),
    Case(
        "p-limit",
        "const limit = pkg(2); return await Promise.all([1, 2, 3].map((x) => limit(async () => x * 2)));",
        [2, 4, 6],
        esm_only=True,
    ),
    Case(
        "iconv-lite",
        "const bytes = pkg.encode('h\u00e9llo', 'win1252'); "
        "return [bytes.length, pkg.decode(bytes, 'win1252')];",
        [5, "h\u00e9llo"],
    ),
    Case("js-yaml", "return pkg.load('a: 1\\nb: [x, y]');", {"a": 1, "b": ["x", "y"]}),
    Case(
        "mime-types",
        "return [pkg.lookup('file.json'), pkg.extension('text/html')];",
        ["application/json", "html"],
    ),
    Case("camelcase", "return pkg('foo-bar_baz');", "fooBarBaz", esm_only=True),
    Case(
        "qs",
        "return [pkg.stringify({a: {b: 1}}), pkg.parse('a[b]=1&c=2')];",
        ["a%5Bb%5D=1", {"a": {"b": "1"}, "c": "2"}],
    ),
    Case(
        "fast-deep-equal",
        "return [pkg({a: [1, {b: 2}]}, {a: [1, {b: 2}]}), pkg({a: 1}, {a: 2})];",
        [True, False],
    ),
    Case("bytes", "return [pkg(1024), pkg('1kb')];", ["1KB", 1024]),
    Case(
        "yaml",
        "return [pkg.parse('a: 1\\nb: [x, y]'), pkg.stringify({a: 1})];",
        [{"a": 1, "b": ["x", "y"]}, "a: 1\n"],
    ),
    Case(
        "lodash",
        "return [pkg.chunk([1, 2, 3, 4, 5], 2), pkg.get({a: {b: [1, 2]}}, 'a.b[1]')];",
        [[[1, 2], [3, 4], [5]], 2],
    ),
    Case(
        "node-fetch",
        "const answer = await pkg(base + '/hello?x=1'); return [answer.status, await answer.json()];",
        [200, FETCHED],
        esm_only=True,
    ),
    Case(
        "nanoid",
        "return [pkg.nanoid().length, pkg.customAlphabet('ab', 5)().length];",
        [21, 5],
        esm_only=True,
    ),
    Case(
        "mime",
        "return [pkg.getType('a.json'), pkg.getExtension('text/html')];",
        ["application/json", "html"],
        esm_only=True,
    ),
    Case(
        "zod",
        "const schema = pkg.object({n: pkg.number().int()}); "
        "return [schema.safeParse({n: 1}).success, schema.safeParse({n: 'x'}).success];",
        [True, False],
    ),
    Case("safer-buffer", "return pkg.Buffer.from('hi').toString('hex');", "6869"),
    Case(
        "axios",
        "const answer = await pkg.get(base + '/hello?x=1'); return [answer.status, answer.data];",
        [200, FETCHED],
    ),
    Case(
        "rxjs",
        "return await pkg.lastValueFrom(pkg.of(1, 2, 3).pipe(pkg.map((x) => x * 10), pkg.toArray()));",
        [10, 20, 30],
    ),
    Case(
        "fast-xml-parser",
        "return new pkg.XMLParser().parse('<a><b>1</b><b>2</b></a>');",
        {"a": {"b": [1, 2]}},
    ),
    Case(
        "deepmerge",
        "return pkg({a: [1], b: {c: 1}}, {a: [2], b: {d: 2}});",
        {"a": [1, 2], "b": {"c": 1, "d": 2}},
    ),
    Case(
        "date-fns",
        "return [pkg.format(new Date(2024, 0, 15), 'yyyy-MM-dd'), "
        "pkg.differenceInDays(new Date(2024, 2, 1), new Date(2024, 1, 1))];",
        ["2024-01-15", 29],
    ),
    Case("decimal.js", "return new pkg('0.1').plus('0.2').toString();", "0.3"),
    Case("dayjs", "return pkg('2024-01-15').add(1, 'month').format('YYYY-MM-DD');", "2024-02-15"),
    Case(
        "jsonwebtoken",
        "const token = pkg.sign({sub: 'u1'}, 'secret', {noTimestamp: true}); "
        "return [token.split('.').length, pkg.verify(token, 'secret').sub];",
        [3, "u1"],
    ),
    Case(
        "dot-prop",
        "return [pkg.getProperty({a: {b: [{c: 3}]}}, 'a.b.0.c'), pkg.hasProperty({a: 1}, 'a.b')];",
        [3, False],
        esm_only=True,
    ),
    Case(
        "he",
        "return [pkg.encode('<a & b>'), pkg.decode('&lt;&amp;&#x41;')];",
        ["&#x3C;a &#x26; b&#x3E;", "<&A"],
        esm_only=True,
    ),
    Case("bignumber.js", "return new pkg('0.1').plus('0.2').toString();", "0.3"),
    Case("handlebars", "return pkg.compile('Hi {{name}}!')({name: '<b>'});", "Hi &lt;b&gt;!"),
    Case("xml2js", "return await pkg.parseStringPromise('<a><b>1</b></a>');", {"a": {"b": ["1"]}}),
    Case("got", "return await pkg(base + '/hello?x=1').json();", FETCHED, esm_only=True),
    Case(
        "moment",
        "return pkg.utc('2024-01-15T10:00:00Z').add(1, 'day').format('YYYY-MM-DD HH:mm');",
        "2024-01-16 10:00",
    ),
    Case(
        "immer",
        "const before = {a: [1]}; const after = pkg.produce(before, (draft) => { draft.a.push(2); }); "
        "return [before.a.length, after.a];",
        [1, [1, 2]],
    ),
    Case("marked", "return pkg.parse('# Hi *there*');", "<h1>Hi <em>there</em></h1>\n", esm_only=True),
    Case("big.js", "return new pkg('0.1').plus('0.2').toString();", "0.3"),
    Case(
        "p-retry",
        "let tries = 0; return await pkg(async () => { tries += 1; if (tries < 3) throw new Error('again'); "
        "return tries; }, {retries: 5, minTimeout: 1, maxTimeout: 1});",
        3,
        esm_only=True,
    ),
    Case(
        "lodash-es",
        "return [pkg.chunk([1, 2, 3, 4, 5], 2), pkg.get({a: {b: [1, 2]}}, 'a.b[1]')];",
        [[[1, 2], [3, 4], [5]], 2],
        esm_only=True,
    ),
    Case("ejs", "return pkg.render('<p><%= name %></p>', {name: '<b>'});", "<p>&lt;b&gt;</p>"),
    Case("pretty-bytes", "return [pkg(1337), pkg(1e9)];", ["1.34 kB", "1 GB"], esm_only=True),
    Case("classnames", "return pkg('a', {b: true, c: false}, ['d']);", "a b d"),
    Case(
        "validator",
        "return [pkg.isEmail('a@b.co'), pkg.isEmail('nope'), "
        "pkg.isUUID('6ec0bd7f-11c0-43da-975e-2a8ad9ebae0b')];",
        [True, False, True],
    ),
    Case(
        "change-case",
        "return [pkg.camelCase('foo bar'), pkg.snakeCase('fooBar'), pkg.kebabCase('Foo Bar')];",
        ["fooBar", "foo_bar", "foo-bar"],
        esm_only=True,
    ),
    Case("markdown-it", "return pkg().render('# Hi *there*');", "<h1>Hi <em>there</em></h1>\n"),
    Case(
        "joi",
        "const schema = pkg.object({n: pkg.number().integer().required()}); "
        "return [schema.validate({n: 1}).error === undefined, schema.validate({n: 1.5}).error.message];",
        [True, '"n" must be an integer'],
    ),
    Case(
        "cheerio",
        "const $ = pkg.load('<ul><li>a</li><li>b</li></ul>'); "
        "return $('li').map((i, el) => $(el).text()).get();",
        ["a", "b"],
    ),
    Case(
        "query-string",
        "return [pkg.parse('a=1&b=2&b=3'), pkg.stringify({b: 2, a: 1})];",
        [{"a": "1", "b": ["2", "3"]}, "a=1&b=2"],
        esm_only=True,
    ),
    Case(
        "crypto-js",
        "const secret = pkg.AES.encrypt('hi', 'k').toString(); "
        "return [pkg.SHA256('abc').toString(), pkg.AES.decrypt(secret, 'k').toString(pkg.enc.Utf8)];",
        ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "hi"],
    ),
    Case(
        "ramda",
        "return [pkg.sum([1, 2, 3]), "
        "pkg.pipe(pkg.map(pkg.multiply(2)), pkg.filter((x) => x > 2))([1, 2, 3])];",
        [6, [4, 6]],
    ),
    Case(
        "csv-parse",
        "return await new Promise((resolve, reject) => pkg.parse('a,b\\n1,2\\n', {columns: true}, "
        "(error, rows) => (error ? reject(error) : resolve(rows))));",
        [{"a": "1", "b": "2"}],
    ),
    Case("mustache", "return pkg.render('Hi {{name}}!', {name: '<b>'});", "Hi &lt;b&gt;!"),
    Case(
        "yup",
        "const schema = pkg.object({n: pkg.number().integer().required()}); "
        "return [await schema.isValid({n: 1}), await schema.isValid({n: 1.5})];",
        [True, False],
    ),
    Case("slugify", "return pkg('Hello World & Friends', {lower: true});", "hello-world-and-friends"),
    Case("papaparse", "return pkg.parse('a,b\\n1,2', {header: true}).data;", [{"a": "1", "b": "2"}]),
    Case(
        "bcryptjs",
        "const hash = pkg.hashSync('pw', 4); "
        "return [hash.startsWith('$2'), pkg.compareSync('pw', hash), pkg.compareSync('no', hash)];",
        [True, True, False],
    ),
    Case("sanitize-html", "return pkg('<p onclick=\"x()\">Hi<script>evil()</script></p>');", "<p>Hi</p>"),
    Case("ky", "return await pkg.get(base + '/hello?x=1').json();", FETCHED, esm_only=True),
)

LOADERS = {
    # A namespace from require() (Node's require of an ES module) gives its default export too.
    "require": (
        "const mod = require('{name}');\n"
        "const pkg = mod && mod[Symbol.toStringTag] === 'Module' && mod.default !== undefined\n"
        "  ? mod.default : mod;\n"
    ),
    "import": (
        "const mod = await import('{name}');\nconst pkg = mod.default !== undefined ? mod.default : mod;\n"
    ),
}
VARIANTS = tuple(LOADERS)


def function_code(case: Case, variant: str) -> str:
    return LOADERS[variant].replace("{name}", case.name) + case.body


# -- outcomes ----------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One save and run: `status` is works, save, run, wrong or error (see the module's doc)."""

    status: str
    message: str = ""
    result: Any = None
    save_ms: float | None = None
    run_ms: float | None = None
    error: Any = None  # the service's error object, whole


@dataclass
class Report:
    name: str
    version: str = "?"
    format: str = "?"  # cjs, dual (CommonJS and ES module entries), esm (ES module only), ? (not installed)
    form: str = "require"  # the form that counts: require, or import for an ES-module-only package
    attempts: dict[str, Attempt] = field(default_factory=dict)
    control: dict[str, Attempt] = field(default_factory=dict)  # plain node, with --control

    @property
    def works(self) -> bool:
        attempt = self.attempts.get(self.form)
        return attempt is not None and attempt.status == "works"


def error_text(error: Any) -> str:
    """`Type: message` of a service error object, with the npm output's last line for a DependencyError."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', '?')}: {error.get('message', '')}"
    stack = error.get("stack")
    if isinstance(stack, str) and stack.strip():  # its first line names the JavaScript error and its code
        first = stack.strip().splitlines()[0]
        if str(error.get("message", "")) in first:
            text = f"{error.get('type', '?')}: {first}"
    output = error.get("output")
    if isinstance(output, str) and output.strip() and output.strip().splitlines()[-1] not in text:
        text += f" [npm: {output.strip().splitlines()[-1]}]"
    return text


def judged(status: int, answer: Any, expected: Any, run_ms: float, save_ms: float) -> Attempt:
    if status == 200 and isinstance(answer, dict) and "result" in answer:
        result = answer["result"]
        if result == expected:
            return Attempt("works", result=result, save_ms=save_ms, run_ms=run_ms)
        message = f"returned {short(json.dumps(result), 300)}, expected {short(json.dumps(expected), 300)}"
        return Attempt("wrong", message, result, save_ms, run_ms)
    error = answer.get("error") if isinstance(answer, dict) else None
    if status == 0 or error is None:
        return Attempt("error", f"HTTP {status}: {short(str(answer), 500)}", save_ms=save_ms, run_ms=run_ms)
    return Attempt("run", error_text(error), save_ms=save_ms, run_ms=run_ms, error=error)


def short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the service -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def request(url: str, method: str, body: Any, timeout: float) -> tuple[int, Any]:
    """(status, decoded JSON or text) of one HTTP call; status 0 when there was no answer."""
    data = None if body is None else json.dumps(body).encode()
    call = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as failed:
        status, raw = failed.code, failed.read()
    except (OSError, http.client.HTTPException) as failed:  # URLError, timeouts, a reset, a dead service
        return 0, f"no answer from the service: {type(failed).__name__}: {failed}"
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def service_environment(extra: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """This process's environment without any of the service's settings (so they are its defaults), but
    npm's registry and npm_config_* kept; then `extra`. Also the settings dropped, to say so."""
    sys.path.insert(0, str(ROOT))
    from entrypoints.settings import VARIABLES

    settings = {name for names, _field, _parse in VARIABLES for name in names} - {"NPM_CONFIG_REGISTRY"}
    dropped = sorted(name for name in os.environ if name in settings and name not in extra)
    env = {name: value for name, value in os.environ.items() if name not in settings}
    return {**env, **extra}, dropped


class Service:
    """`functions serve` on 127.0.0.1 with its storage in `scratch`; stopped by `stop()` whatever happens."""

    def __init__(self, scratch: Path, extra: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage = scratch / "functions"
        self.log = scratch / "service.log"
        env, self.dropped = service_environment(
            {
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(self.storage),
                "PYTHON_PACKAGES_DIR": str(scratch / "python-packages"),  # not the checkout's data/ folder
                "LOG_LEVEL": "error",
                "NPM_INSTALL_TIMEOUT": str(NPM_INSTALL_TIMEOUT),
                **extra,
            }
        )
        self.settings = {name: env[name] for name in sorted(extra)}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVE],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: one killpg reaches what it forks into it
            )
        self._seen: set[int] = set()

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the service exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            status, health = request(f"{self.url}/sys/healthcheck", "GET", None, 5)
            if status == 200 and isinstance(health, dict) and health.get("ready"):
                self.remember_children()
                return health
            time.sleep(0.2)
        raise RuntimeError(f"the service was not ready after {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def remember_children(self) -> None:
        """The Node host and the Python kernels run in sessions of their own: remembered, so that they are
        stopped even if the service dies or hangs."""
        self._seen.update(descendants(self.process.pid))

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        return request(self.url + path, method, body, timeout)

    def stop(self) -> None:
        """SIGTERM (the service stops its hosts), then SIGKILL whatever of it is still there."""
        self.remember_children()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                print("the service did not stop within 40 s after SIGTERM: killed", file=sys.stderr)
                kill(-self.process.pid)
                self.process.wait()
        kill(-self.process.pid)  # anything it left in its group
        for pid in sorted(self._seen):
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            kill(-group if group == pid else pid)


def kill(target: int) -> None:
    try:
        os.kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the service and remove the scratch folder."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


@contextmanager
def scratch_folder(prefix: str, keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        if keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running_service(scratch: Path, extra: dict[str, str]) -> Iterator[Service]:
    service = Service(scratch, extra)
    try:
        health = service.wait_ready()
        for language, runtime in sorted((health.get("runtimes") or {}).items()):
            state = (
                {k: v for k, v in runtime.items() if isinstance(v, str)}
                if isinstance(runtime, dict)
                else runtime
            )
            print(f"service runtime {language}: {state}", file=sys.stderr)
        if service.dropped:
            print(f"left out of the service's environment: {', '.join(service.dropped)}", file=sys.stderr)
        yield service
    finally:
        service.stop()


def in_parallel(tasks: Sequence[Callable[[], None]], workers: int) -> None:
    """Runs the tasks a few at a time; Ctrl-C cancels those not started (the ones running end with the
    service, stopped by the caller)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for future in concurrent.futures.as_completed([pool.submit(task) for task in tasks]):
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# -- facts about the machine and the checkout --------------------------------------------------------------


def tool_version(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as failed:
        return f"({failed})"
    return done.stdout.strip() or f"(exit {done.returncode}: {done.stderr.strip()[:200]})"


def checkout() -> dict[str, Any]:
    status = tool_version("git", "status", "--porcelain", "--untracked-files=no")
    changed = [] if status.startswith("(") else [line[3:] for line in status.splitlines()]
    return {"commit": tool_version("git", "rev-parse", "--short", "HEAD"), "changed_files": changed}


def header(title: str, facts: dict[str, Any]) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"{title} ({when})"]
    lines += [f"  {key}: {value}" for key, value in facts.items() if not isinstance(value, list)]
    changed = facts.get("changed_files")
    if changed:
        lines.append(f"  uncommitted changes in: {', '.join(changed)}")
    return "\n".join(lines)


# -- packages: what got installed ----------------------------------------------------------------------------


def resolve_export(entry: Any, conditions: frozenset[str]) -> str | None:
    """The file an `exports` entry gives under `conditions`, in Node's order (the object's own)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, list):
        return next((found for item in entry if (found := resolve_export(item, conditions))), None)
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key in conditions and (found := resolve_export(value, conditions)):
                return found
    return None


def package_facts(package_dir: Path) -> tuple[str, str]:
    """(version, format) of an installed package: cjs, dual or esm, as Node would load its main entry."""
    try:
        meta = json.loads((package_dir / "package.json").read_text())
    except (OSError, ValueError):
        return "?", "?"

    def commonjs(file: str | None) -> bool:
        """As Node decides: by the extension, else by the `type` of the nearest package.json (a folder of a
        dual package often has one of its own: `{"type": "commonjs"}` beside its CommonJS build)."""
        if file is None or file.endswith(".mjs"):
            return False
        if file.endswith((".cjs", ".json", ".node")):
            return True
        folder = (package_dir / file).parent
        while folder != package_dir and package_dir in folder.parents:
            if (folder / "package.json").is_file():
                try:
                    return bool(json.loads((folder / "package.json").read_text()).get("type") != "module")
                except (OSError, ValueError, AttributeError):
                    return True
            folder = folder.parent
        return bool(meta.get("type") != "module")

    exports = meta.get("exports")
    if exports is None:
        cjs_entry: str | None = meta.get("main") or "index.js"
        esm_entry = cjs_entry
    else:
        if isinstance(exports, dict) and any(key.startswith(".") for key in exports):
            exports = exports.get(".")
        cjs_entry = resolve_export(exports, frozenset({"require", "node", "default"}))
        esm_entry = resolve_export(exports, frozenset({"import", "node", "default"}))
    if commonjs(cjs_entry):
        fmt = "dual" if esm_entry and esm_entry != cjs_entry and not commonjs(esm_entry) else "cjs"
    else:
        fmt = "esm"
    return str(meta.get("version", "?")), fmt


# -- one package through the service ------------------------------------------------------------------------


def workspace_id(case: Case, variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", case.name) + "." + variant


def try_variant(service: Service, case: Case, variant: str, base: str, report: Report, keep: bool) -> None:
    workspace = workspace_id(case, variant)
    body = {
        "functions": {
            "use": {"code": function_code(case, variant), "parameters": {"base": {"type": "string"}}}
        },
        "dependencies": {case.name: "latest"},
    }
    started = time.perf_counter()
    status, answer = service.call("POST", f"/v2/functions/{workspace}", body, NPM_INSTALL_TIMEOUT * 2 + 60)
    save_ms = round((time.perf_counter() - started) * 1000, 1)
    service.remember_children()
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        kind = "save" if error is not None else "error"
        text = error_text(error) if error is not None else f"HTTP {status}: {short(str(answer), 500)}"
        report.attempts[variant] = Attempt(kind, text, save_ms=save_ms, error=error)
        return
    if report.version == "?":
        report.version, report.format = package_facts(
            service.storage / workspace / "node_modules" / case.name
        )
    started = time.perf_counter()
    status, answer = service.call(
        "POST", f"/v2/functions/{workspace}/run/use", {"parameters": {"base": base}}, 90
    )
    run_ms = round((time.perf_counter() - started) * 1000, 1)
    report.attempts[variant] = judged(status, answer, case.expected, run_ms, save_ms)
    if not keep:  # its worker and its node_modules go
        service.call("DELETE", f"/v2/functions/{workspace}", None, 60)


# -- the local HTTP server of the network packages ----------------------------------------------------------


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = json.dumps({"method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def echo_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering GETs with {"method", "path"}: the only network these use."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# -- the control: the same code under plain node -------------------------------------------------------------

CONTROL = """
const {{ createRequire }} = require('node:module');
const require_ = createRequire(__filename);
(async (require, base) => {{
{code}
}})(require_, {base}).then(
  (result) => console.log(JSON.stringify({{ result: result === undefined ? null : result }})),
  (error) => console.log(JSON.stringify({{ error: {{ type: 'FunctionError', message: String(error) }} }})),
);
"""


def control(
    cases: Sequence[Case], reports: dict[str, Report], base: str, scratch: Path, workers: int
) -> None:
    """Installs the packages with npm in a folder of their own and runs each function body under `node`."""
    folder = scratch / "control"
    folder.mkdir()
    (folder / "package.json").write_text('{"name": "control", "private": true}\n')
    install = [
        "npm",
        "install",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--cache",
        str(scratch / "control-npm-cache"),
        *(f"{case.name}@latest" for case in cases),
    ]
    print(f"control: npm install of {len(cases)} packages ...", file=sys.stderr)
    try:
        done = subprocess.run(
            install, cwd=folder, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT
        )
        failure = "" if done.returncode == 0 else short(done.stderr.strip()[-1000:], 1000)
    except subprocess.TimeoutExpired:
        failure = f"npm install took over {NPM_INSTALL_TIMEOUT} s"
    if failure:
        for case in cases:
            for variant in VARIANTS:
                reports[case.name].control[variant] = Attempt("save", failure)
        return

    def run_one(case: Case, variant: str) -> None:
        script = folder / f"{workspace_id(case, variant)}.cjs"
        script.write_text(CONTROL.format(code=function_code(case, variant), base=json.dumps(base)))
        started = time.perf_counter()
        try:
            done = subprocess.run(
                ["node", str(script)], cwd=folder, capture_output=True, text=True, timeout=60
            )
            lines = done.stdout.strip().splitlines()
            answer = (
                json.loads(lines[-1])
                if lines
                else {"error": {"type": "Crash", "message": done.stderr[-500:]}}
            )
        except (subprocess.TimeoutExpired, ValueError) as failed:
            answer = {"error": {"type": type(failed).__name__, "message": str(failed)}}
        run_ms = round((time.perf_counter() - started) * 1000, 1)
        reports[case.name].control[variant] = judged(
            200 if "result" in answer else 422, answer, case.expected, run_ms, 0
        )

    in_parallel([partial(run_one, case, variant) for case in cases for variant in VARIANTS], workers)


# -- the report ---------------------------------------------------------------------------------------------

MARK = {"works": "ok", "save": "SAVE", "run": "RUN", "wrong": "WRONG", "error": "ERROR"}


def table(reports: Sequence[Report], with_control: bool) -> str:
    rows = [["#", "package", "version", "format", "form", "result", "require", "import"]]
    if with_control:
        rows[0].append("plain node (req/imp)")
    rows[0].append("why (the form that counts, else the other)")
    for number, report in enumerate(reports, 1):
        marks = [MARK.get(report.attempts[v].status, "?") if v in report.attempts else "-" for v in VARIANTS]
        row = [str(number), report.name, report.version, report.format, report.form]
        row += ["works" if report.works else "FAILS", *marks]
        if with_control:
            row.append(
                "/".join(
                    MARK.get(report.control[v].status, "?") if v in report.control else "-" for v in VARIANTS
                )
            )
        counted = report.attempts.get(report.form)
        other = next((a for v, a in report.attempts.items() if v != report.form), None)
        reason = counted.message if counted and counted.status != "works" else ""
        if not reason and other and other.status != "works":
            reason = f"({'import' if report.form == 'require' else 'require'}) {other.message}"
        row.append(short(reason, 160))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def failures(reports: Sequence[Report]) -> str:
    lines = []
    for report in reports:
        for variant, attempt in report.attempts.items():
            if attempt.status != "works":
                counts = " (counts)" if variant == report.form else ""
                message = short(attempt.message, 1200)
                lines.append(f"- {report.name} via {variant}{counts}: [{attempt.status}] {message}")
    return "\n".join(lines)


def summary(reports: Sequence[Report]) -> str:
    total = len(reports)
    works = sum(report.works for report in reports)
    by = {v: sum(r.attempts.get(v, Attempt("")).status == "works" for r in reports) for v in VARIANTS}
    either = sum(any(a.status == "works" for a in r.attempts.values()) for r in reports)
    esm = sum(r.form == "import" for r in reports)
    return (
        f"{works} of {total} work (each in its own form: require, "
        f"or import() for the {esm} ES-module-only ones)\n"
        f"  with require: {by['require']} of {total}; with import(): {by['import']} of {total}; "
        f"with either: {either} of {total}"
    )


def parse_only(raw: str | None, known: Sequence[str]) -> list[str]:
    if not raw:
        return list(known)
    wanted = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(
            f"error: --only names unknown packages: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", help="comma-separated package names (default: all 60)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--parallel", type=int, default=3, help="saves and runs at once (default 3)")
    parser.add_argument("--control", action="store_true", help="also run the same code under plain node")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces and the temporary folder")
    arguments = parser.parse_args(argv)
    try:
        names = parse_only(arguments.only, [case.name for case in CASES])
    except SystemExit as refused:
        print(refused, file=sys.stderr)
        return 2
    cases = [case for case in CASES if case.name in names]
    reports = {case.name: Report(case.name, form="import" if case.esm_only else "require") for case in cases}
    stop_on_sigterm()
    facts: dict[str, Any] = {
        "node": tool_version("node", "--version"),
        "npm": tool_version("npm", "--version"),
        "registry": os.environ.get("NPM_CONFIG_REGISTRY") or "npm's default",
        **checkout(),
    }
    print(header(f"popular npm packages as functions: {len(cases)} packages", facts), file=sys.stderr)
    started = time.monotonic()
    try:
        with scratch_folder("popular-npm-", arguments.keep) as scratch, echo_server() as base:
            allow = f"127.0.0.1:{base.rsplit(':', 1)[1]}"
            with running_service(scratch, {"FUNCTIONS_EGRESS_ALLOW": allow}) as service:
                facts["service_settings"] = service.settings
                done = iter(range(1, 2 * len(cases) + 1))

                def task(case: Case, variant: str) -> Callable[[], None]:
                    def run() -> None:
                        try_variant(service, case, variant, base, reports[case.name], arguments.keep)
                        attempt = reports[case.name].attempts[variant]
                        print(
                            f"[{next(done):3}/{2 * len(cases)}] {case.name} via {variant}: {attempt.status}"
                            f" (save {attempt.save_ms or 0:.0f} ms, run {attempt.run_ms or 0:.0f} ms)",
                            file=sys.stderr,
                        )

                    return run

                in_parallel(
                    [task(case, variant) for case in cases for variant in VARIANTS], arguments.parallel
                )
            if arguments.control:
                control(cases, reports, base, scratch, arguments.parallel)
    except KeyboardInterrupt:
        print("interrupted: the service was stopped", file=sys.stderr)
        return 130
    except RuntimeError as failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    for report in reports.values():
        if report.format in ("cjs", "dual"):
            report.form = "require"
        elif report.format == "esm":
            report.form = "import"
    ordered = [reports[name] for name in names]
    print(table(ordered, arguments.control))
    print()
    trouble = failures(ordered)
    if trouble:
        print("Failures, whole messages:\n" + trouble + "\n")
    print(summary(ordered))
    print(f"({time.monotonic() - started:.0f} s)")
    if arguments.json:
        document = {
            **facts,
            "when": datetime.datetime.now(datetime.UTC).isoformat(),
            "total": len(ordered),
            "works": sum(report.works for report in ordered),
            "packages": [{**asdict(report), "works": report.works} for report in ordered],
        }
        arguments.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {arguments.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
