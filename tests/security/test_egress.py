"""The egress policy attacked from functions: FUNCTIONS_EGRESS (`public`, `none`, `all`) and
FUNCTIONS_EGRESS_ALLOW, in both languages, through every client a function has.

The service runs inside a network namespace whose only way out leads to a second namespace of modelled
targets (tests/security/egress_world.py): the service's own API on every loopback spelling, a bystander on
its loopback, a metadata endpoint, a private service, a nameserver and a "public" server with a redirect
route. Each refused attempt must fail at once inside the function, with EACCES and an error naming the
policy, and no listener anywhere may see a connection or a datagram; each allowed one must arrive.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from errno import EACCES, EOPNOTSUPP
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrypoints.settings import PYTHON_BUILTINS
from tests.security.conftest import Arsenal, Tenant, function_error
from tests.security.egress_world import (
    BYSTANDER_PORT,
    METADATA,
    NAMESERVER,
    PRIVATE,
    PRIVATE_OTHER_PORT,
    PRIVATE_PORT,
    PRIVATE_UNLISTED_PORT,
    PRIVATE_V6,
    PUBLIC,
    NamespacesUnavailable,
    Service,
    Watch,
    World,
    network_world,
    serving_in,
)

pytestmark = [pytest.mark.node, pytest.mark.kernel]

REFUSAL = ("egress policy", "FUNCTIONS_EGRESS")
QUICK_MS = 3000  # a refusal is immediate; the run timeout is 5 s
UDP_SETTLE_S = 0.3  # a datagram has no answer to wait for: time for the listener to log it
PORTS = {"public": 4000, "none": 4001, "all": 4002, "allow": 4003}
ENVIRONMENT = {
    "NODE_BUILTIN_MODULES": "http,https,url,util,zlib,dns,stream,buffer,crypto,net,dgram",
    "PYTHON_BUILTIN_MODULES": ",".join((*PYTHON_BUILTINS, "socket")),
    "FUNCTIONS_RUN_TIMEOUT": "5000",
    "PYTHON_FUNCTIONS_RUN_TIMEOUT": "5000",
    "KERNEL_POOL_SIZE": "2",
    "LOG_LEVEL": "error",
    # `requests` and `urllib3` come from the service's own environment, which only its own Python sees
    "PYTHON_KERNEL_BINARY": sys.executable,
}
VICTIM = "return 'victim-original'"
REWRITE = {"functions": {"hello": {"code": "return 'pwned'", "language": "nodejs"}}}

# -- the functions that attack: one workspace per language, a function per client --------------------

JS_ERROR = """
const describe = (err) => {
  const chain = [err, err.cause, ...(err.cause?.errors ?? []), ...(err.errors ?? [])].filter(Boolean);
  return {
    error: chain.map((e) => `${e.name}: ${e.message}`).join(' <- '),
    cause: err.cause ? String(err.cause.message) : null,
    causes: (err.cause?.errors ?? err.errors ?? []).map((e) => String(e.message)),
    code: err.cause?.code ?? err.code ?? null,
  };
};
"""
JS = {
    "fetch": JS_ERROR
    + """
const started = Date.now();
const init = { method: parameters.method ?? 'GET', redirect: 'follow', signal: AbortSignal.timeout(4000) };
if (parameters.body !== undefined) {
  init.body = JSON.stringify(parameters.body);
  init.headers = { 'content-type': 'application/json' };
}
try {
  const answer = await fetch(parameters.url, init);
  const body = (await answer.text()).slice(0, 4000);
  return { reached: true, status: answer.status, body, ms: Date.now() - started };
} catch (err) {
  return { reached: false, ...describe(err), ms: Date.now() - started };
}
""",
    "fetch-uncaught": """
const init = { method: parameters.method ?? 'GET' };
if (parameters.body !== undefined) {
  init.body = JSON.stringify(parameters.body);
  init.headers = { 'content-type': 'application/json' };
}
return await (await fetch(parameters.url, init)).text();
""",
    "http.get": JS_ERROR
    + """
const started = Date.now();
return await new Promise((resolve) => {
  const request = require('http').get(parameters.url, { timeout: 4000 }, (answer) => {
    let body = '';
    answer.on('data', (chunk) => { body += chunk; });
    answer.on('end', () => resolve({
      reached: true, status: answer.statusCode, body, ms: Date.now() - started,
    }));
  });
  request.on('timeout', () => request.destroy(new Error('timed out')));
  request.on('error', (err) => resolve({ reached: false, ...describe(err), ms: Date.now() - started }));
});
""",
    "net": JS_ERROR
    + """
const started = Date.now();
return await new Promise((resolve) => {
  const socket = require('net').connect({ host: parameters.host, port: parameters.port });
  socket.setTimeout(4000);
  let body = '';
  socket.on('connect', () => socket.end('GET /raw HTTP/1.0\\r\\n\\r\\n'));
  socket.on('data', (chunk) => { body += chunk; });
  socket.on('end', () => resolve({ reached: true, body: body.slice(0, 4000), ms: Date.now() - started }));
  socket.on('timeout', () => socket.destroy(new Error('timed out')));
  socket.on('error', (err) => resolve({ reached: false, ...describe(err), ms: Date.now() - started }));
});
""",
    "dgram": JS_ERROR
    + """
const started = Date.now();
const socket = require('dgram').createSocket(parameters.host.includes(':') ? 'udp6' : 'udp4');
return await new Promise((resolve) => {
  let done = false;
  const finish = (outcome) => {
    if (done) return;
    done = true;
    socket.close();
    resolve({ ...outcome, ms: Date.now() - started });
  };
  socket.on('error', (err) => finish({ reached: false, ...describe(err) }));
  socket.send(Buffer.from(parameters.payload), parameters.port, parameters.host,
    (err) => finish(err ? { reached: false, ...describe(err) } : { reached: true }));
});
""",
    "pkg-net": "return await require('egress-sockets').connect(parameters.host, parameters.port)",
    "pkg-dgram": (
        "return await require('egress-sockets').send(parameters.host, parameters.port, parameters.payload)"
    ),
    "lookup": JS_ERROR
    + """
try {
  const found = await require('dns').promises.lookup(parameters.name, { all: true });
  return { reached: true, addresses: found.map((entry) => entry.address) };
} catch (err) {
  return { reached: false, ...describe(err) };
}
""",
    "resolve4": JS_ERROR
    + """
try {
  return { reached: true, addresses: await require('dns').promises.resolve4(parameters.name) };
} catch (err) {
  return { reached: false, ...describe(err) };
}
""",
}
# The package a shared modules folder offers: it opens sockets of its own.
PACKAGE = """'use strict';
const net = require('net');
const dgram = require('dgram');

const describe = (err) => ({ error: `${err.name}: ${err.message}`, code: err.code ?? null });

exports.connect = (host, port) => new Promise((resolve) => {
  const started = Date.now();
  const socket = net.connect({ host, port });
  socket.setTimeout(4000);
  let body = '';
  socket.on('connect', () => socket.end('GET /raw HTTP/1.0\\r\\n\\r\\n'));
  socket.on('data', (chunk) => { body += chunk; });
  socket.on('end', () => resolve({ reached: true, body: body.slice(0, 4000), ms: Date.now() - started }));
  socket.on('timeout', () => socket.destroy(new Error('timed out')));
  socket.on('error', (err) => resolve({ reached: false, ...describe(err), ms: Date.now() - started }));
});

exports.send = (host, port, payload) => new Promise((resolve) => {
  const started = Date.now();
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let done = false;
  const finish = (outcome) => {
    if (done) return;
    done = true;
    socket.close();
    resolve({ ...outcome, ms: Date.now() - started });
  };
  socket.on('error', (err) => finish({ reached: false, ...describe(err) }));
  socket.send(Buffer.from(payload), port, host, (err) => finish(err ? { reached: false, ...describe(err) }
    : { reached: true }));
});
"""

PY_ERROR = """
def describe(exc):
    reason = getattr(exc, "reason", None)
    number = getattr(exc, "errno", None) or getattr(reason, "errno", None)
    return {"reached": False, "error": f"{type(exc).__name__}: {exc}", "errno": number,
            "ms": round((time.monotonic() - started) * 1000)}
"""
PY_EXCHANGE = """
def exchange(sock, sent=False):
    # a request and the whole answer: a connection that got through is logged before the run ends
    if not sent:
        sock.sendall(b"GET /raw HTTP/1.0\\r\\n\\r\\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer.decode(errors="replace")[:4000]
"""
PY = {
    "urllib": """
import json, time, urllib.error, urllib.request
started = time.monotonic()
"""
    + PY_ERROR
    + """
body = parameters.get("body")
request = urllib.request.Request(
    parameters["url"], data=None if body is None else json.dumps(body).encode(),
    method=parameters.get("method", "GET"), headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=4) as answer:
        return {"reached": True, "status": answer.status, "body": answer.read(4000).decode(),
                "ms": round((time.monotonic() - started) * 1000)}
except urllib.error.HTTPError as exc:  # an answer all the same
    return {"reached": True, "status": exc.code, "body": exc.read(4000).decode(errors="replace")}
except Exception as exc:
    return describe(exc)
""",
    "urllib-uncaught": """
import json, urllib.request
body = parameters.get("body")
request = urllib.request.Request(
    parameters["url"], data=None if body is None else json.dumps(body).encode(),
    method=parameters.get("method", "GET"), headers={"content-type": "application/json"})
with urllib.request.urlopen(request, timeout=4) as answer:
    return answer.read().decode()
""",
    "http.client": """
import http.client, time
started = time.monotonic()
"""
    + PY_ERROR
    + """
connection = http.client.HTTPConnection(parameters["host"], parameters["port"], timeout=4)
try:
    connection.request("GET", parameters.get("path", "/"))
    answer = connection.getresponse()
    return {"reached": True, "status": answer.status, "body": answer.read(4000).decode(errors="replace"),
            "ms": round((time.monotonic() - started) * 1000)}
except OSError as exc:
    return describe(exc)
finally:
    connection.close()
""",
    "tcp": """
import socket, time
started = time.monotonic()
"""
    + PY_EXCHANGE
    + PY_ERROR
    + """
try:
    with socket.create_connection((parameters["host"], parameters["port"]), timeout=4) as sock:
        return {"reached": True, "body": exchange(sock), "ms": round((time.monotonic() - started) * 1000)}
except OSError as exc:
    return describe(exc)
""",
    "connect_ex": PY_EXCHANGE
    + """
import socket
family = socket.AF_INET6 if ":" in parameters["host"] else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as sock:
    sock.settimeout(4)
    code = sock.connect_ex((parameters["host"], parameters["port"]))
    body = exchange(sock) if code == 0 else ""
return {"reached": code == 0, "errno": code, "error": f"connect_ex: {code}", "body": body}
""",
    "fastopen": """
import socket, time
started = time.monotonic()
"""
    + PY_EXCHANGE
    + PY_ERROR
    + """
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.settimeout(4)
    try:
        sock.sendto(b"GET /raw HTTP/1.0\\r\\n\\r\\n", 0x20000000, (parameters["host"], parameters["port"]))
        return {"reached": True, "body": exchange(sock, sent=True)}
    except OSError as exc:
        return describe(exc)
""",
    "udp": """
import socket, time
started = time.monotonic()
"""
    + PY_ERROR
    + """
family = socket.AF_INET6 if ":" in parameters["host"] else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    try:
        sock.sendto(parameters["payload"].encode(), (parameters["host"], parameters["port"]))
        return {"reached": True}
    except OSError as exc:
        return describe(exc)
""",
    "udp-connect": """
import socket, time
started = time.monotonic()
"""
    + PY_ERROR
    + """
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    try:
        sock.connect((parameters["host"], parameters["port"]))
        sock.send(parameters["payload"].encode())
        return {"reached": True}
    except OSError as exc:
        return describe(exc)
""",
    "sendmsg": """
import socket, time
started = time.monotonic()
"""
    + PY_ERROR
    + """
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    try:
        sock.sendmsg([parameters["payload"].encode()], [], 0, (parameters["host"], parameters["port"]))
        return {"reached": True}
    except OSError as exc:
        return describe(exc)
""",
    "requests": """
import time
started = time.monotonic()
"""
    + PY_ERROR
    + """
import requests
try:
    answer = requests.get(parameters["url"], timeout=4)
    return {"reached": True, "status": answer.status_code, "body": answer.text[:4000]}
except Exception as exc:
    return describe(exc)
""",
    "urllib3": """
import time
started = time.monotonic()
"""
    + PY_ERROR
    + """
import urllib3
try:
    answer = urllib3.PoolManager(retries=False, timeout=4).request("GET", parameters["url"])
    return {"reached": True, "status": answer.status, "body": answer.data.decode(errors="replace")[:4000]}
except Exception as exc:
    return describe(exc)
""",
    "getaddrinfo": """
import socket, time
started = time.monotonic()
"""
    + PY_ERROR
    + """
try:
    found = socket.getaddrinfo(parameters["name"], 80, socket.AF_INET, socket.SOCK_STREAM)
    return {"reached": True, "addresses": sorted({entry[4][0] for entry in found})}
except OSError as exc:
    return describe(exc)
""",
}
UDP_KEYS = {"dgram", "pkg-dgram", "udp", "udp-connect", "sendmsg"}


class Deployed:
    """A service in `svc`, a tenant of it and its two workspaces of attacking functions."""

    def __init__(self, world: World, service: Service, storage: Path) -> None:
        self.world, self.service, self.port = world, service, service.port
        self.tenant = Tenant(service.url, storage)
        self.tenant.http.close()  # never through a proxy of the environment
        self.tenant.http = httpx.Client(base_url=service.url, timeout=30.0, trust_env=False)
        self.js = Arsenal(self.tenant, "probes-js", JS, "nodejs")
        self.py = Arsenal(self.tenant, "probes-py", PY, "python")

    def arsenal(self, language: str) -> Arsenal:
        return self.js if language == "nodejs" else self.py

    def probe(self, language: str, key: str, **params: Any) -> dict[str, Any]:
        """Run one attacking function: the run itself completes quickly, whatever the attempt did."""
        answer = self.arsenal(language).run(key, params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["duration"] < QUICK_MS, body
        outcome: dict[str, Any] = body["result"]
        assert isinstance(outcome, dict), body
        return outcome

    def api(self, host: str) -> str:
        """The URL of a workspace of this service, by way of `host`."""
        return f"http://{host}:{self.port}/v2/functions/victim"

    def health(self) -> dict[str, Any]:
        answer = self.tenant.http.get("/sys/healthcheck")
        assert answer.status_code == 200, answer.text
        walls: dict[str, Any] = answer.json()["walls"]
        return walls


def refused(outcome: dict[str, Any], words: bool = True, errnos: tuple[int, ...] = (EACCES,)) -> None:
    """The attempt failed with EACCES, naming the policy, well within the run's timeout."""
    assert outcome["reached"] is False, outcome
    assert outcome.get("ms", 0) < QUICK_MS, outcome
    assert outcome.get("code") in (None, "EACCES"), outcome
    assert outcome.get("errno") in (None, *errnos), outcome
    if words:
        assert all(word in outcome["error"] for word in REFUSAL), outcome


def nothing_arrived(watch: Watch, udp: bool = False) -> None:
    """No listener, in `world` or on svc's loopback, saw a connection or a datagram."""
    assert watch.total(settle=UDP_SETTLE_S if udp else 0.0) == {}


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    try:
        with network_world() as made:
            yield made
    except NamespacesUnavailable as exc:
        pytest.skip(f"no network namespaces here: {exc}")


def reachable_folder(world: World, name: str) -> Path:
    """A folder the hosts' unprivileged user can read, so they run as that user (tmp_path is root's own)."""
    folder = world.folder / name
    folder.mkdir(mode=0o755)
    return folder


@pytest.fixture(scope="module")
def shared_modules(world: World) -> Path:
    """A SHARED_NODE_MODULES_DIRECTORY holding `egress-sockets`, a package that opens its own sockets."""
    folder = reachable_folder(world, "shared-modules")
    (folder / "package.json").write_text('{"name": "shared", "version": "1.0.0"}\n')
    package = folder / "node_modules" / "egress-sockets"
    package.mkdir(parents=True)
    (package / "package.json").write_text(
        '{"name": "egress-sockets", "version": "1.0.0", "main": "index.js"}\n'
    )
    (package / "index.js").write_text(PACKAGE)
    for path in (folder / "node_modules", package):
        path.chmod(0o755)
    return folder


@contextmanager
def deployed(world: World, shared: Path, name: str, **environ: str) -> Iterator[Deployed]:
    storage = reachable_folder(world, f"storage-{name}")
    environ = {**ENVIRONMENT, "SHARED_NODE_MODULES_DIRECTORY": str(shared), **environ}
    with serving_in(world, storage, PORTS[name], **environ) as service:
        made = Deployed(world, service, storage)
        saved = made.tenant.save("victim", {"hello": VICTIM})
        assert saved.status_code == 200, saved.text
        try:
            yield made
        finally:
            made.tenant.http.close()


@pytest.fixture(scope="module")
def public(world: World, shared_modules: Path) -> Iterator[Deployed]:
    """The default policy (FUNCTIONS_EGRESS unset: `public`), with FUNCTIONS_API_KEY unset."""
    with deployed(world, shared_modules, "public") as made:
        yield made


@pytest.fixture(scope="module")
def nothing(world: World, shared_modules: Path) -> Iterator[Deployed]:
    with deployed(world, shared_modules, "none", FUNCTIONS_EGRESS="none") as made:
        yield made


@pytest.fixture(scope="module")
def everything(world: World, shared_modules: Path) -> Iterator[Deployed]:
    with deployed(world, shared_modules, "all", FUNCTIONS_EGRESS="all") as made:
        yield made


ALLOW = f"internal.test:{PRIVATE_PORT},10.77.0.0/24:{PRIVATE_OTHER_PORT},127.0.0.1:{BYSTANDER_PORT}"


@pytest.fixture(scope="module")
def allowing(world: World, shared_modules: Path) -> Iterator[Deployed]:
    with deployed(world, shared_modules, "allow", FUNCTIONS_EGRESS_ALLOW=ALLOW) as made:
        yield made


def victim_intact(service: Deployed, before: Any) -> None:
    assert service.tenant.http.get("/v2/functions/victim").json() == before
    answer = service.tenant.run("victim", "hello")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "victim-original"


# -- 1. the takeover: a function rewriting another workspace through the service's own API -------------


@pytest.mark.parametrize("language", ["nodejs", "python"])
def test_the_takeover_through_the_services_own_api_is_refused(
    public: Deployed, world: World, language: str
) -> None:
    before = public.tenant.http.get("/v2/functions/victim").json()
    url = public.api("127.0.0.1")
    client = "fetch" if language == "nodejs" else "urllib"
    watch = world.journal.watch()
    refused(public.probe(language, client, url=url))
    refused(public.probe(language, client, url=url, method="POST", body=REWRITE))
    uncaught = public.arsenal(language).run(
        f"{client}-uncaught", {"url": url, "method": "POST", "body": REWRITE}
    )
    if language == "nodejs":
        error = function_error(uncaught, "TypeError", "fetch failed", *REFUSAL)
    else:
        error = function_error(uncaught, "URLError", *REFUSAL)
    assert "victim-original" not in uncaught.text, error
    assert uncaught.json()["duration"] < QUICK_MS, uncaught.text
    nothing_arrived(watch)
    victim_intact(public, before)


# -- 2. the API on every spelling of this machine ---------------------------------------------------

# How a URL names the service's machine; "{svc}" and "{svc-world}" are its addresses on its two links.
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "localhost",
    "[::1]",
    "0.0.0.0",
    "127.0.0.2",
    "{svc}",
    "{svc-world}",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::]",
    "2130706433",
    "0x7f.1",
]


def spelled(world: World, spelling: str) -> str:
    return spelling.replace("{svc}", world.svc_address).replace("{svc-world}", world.svc_world_address)


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
@pytest.mark.parametrize(
    ("language", "client"),
    [("nodejs", "fetch"), ("nodejs", "http.get"), ("python", "urllib"), ("python", "http.client")],
)
def test_the_api_is_refused_on_every_spelling_of_this_machine(
    public: Deployed, world: World, language: str, client: str, spelling: str
) -> None:
    host = spelled(world, spelling)
    watch = world.journal.watch()
    if client == "http.client":
        outcome = public.probe(
            language, client, host=host.strip("[]"), port=public.port, path="/v2/functions/victim"
        )
    else:
        outcome = public.probe(language, client, url=public.api(host))
    refused(outcome)
    if language == "nodejs" and outcome.get("causes"):  # one error per address tried (happy eyeballs)
        assert all(all(word in cause for word in REFUSAL) for cause in outcome["causes"]), outcome
    nothing_arrived(watch)


def test_a_name_with_several_refused_addresses_still_names_the_policy(public: Deployed, world: World) -> None:
    """`localhost` is 127.0.0.1 and ::1: Node tries both (happy eyeballs) and fails with an AggregateError
    of the two refusals. The error the function sees, and the message an uncaught one reports, must still
    name the policy, as for a single address."""
    watch = world.journal.watch()
    uncaught = public.js.run("fetch-uncaught", {"url": public.api("localhost")})
    function_error(uncaught, "TypeError", "fetch failed", *REFUSAL)
    for client in ("fetch", "http.get"):
        outcome = public.probe("nodejs", client, url=public.api("localhost"))
        error = outcome["cause"] if client == "fetch" else outcome["error"].split(" <- ")[0]
        assert all(word in error for word in REFUSAL), outcome
    nothing_arrived(watch)


# -- 3, 4, 7. the bystander on loopback, the metadata endpoint, the private service, by every client -----

BYSTANDER_URL = f"http://127.0.0.1:{BYSTANDER_PORT}/"
METADATA_URL = f"http://{METADATA}/latest/meta-data/iam/security-credentials/"
PRIVATE_URL = f"http://{PRIVATE}:{PRIVATE_PORT}/admin"
TARGETS: dict[str, tuple[str, int, str]] = {
    "bystander": ("127.0.0.1", BYSTANDER_PORT, BYSTANDER_URL),
    "bystander-v6": ("::1", BYSTANDER_PORT, f"http://[::1]:{BYSTANDER_PORT}/"),
    "metadata": (METADATA, 80, METADATA_URL),
    "private": (PRIVATE, PRIVATE_PORT, PRIVATE_URL),
    "private-v6": (PRIVATE_V6, PRIVATE_PORT, f"http://[{PRIVATE_V6}]:{PRIVATE_PORT}/admin"),
    "multicast": ("224.0.0.251", 5353, "http://224.0.0.251:5353/"),
}
# Which targets each client attacks.
ATTACKED = {
    ("nodejs", "fetch"): ["bystander", "bystander-v6", "metadata", "private", "private-v6"],
    ("nodejs", "http.get"): ["bystander", "metadata", "private"],
    ("nodejs", "net"): ["bystander", "bystander-v6", "metadata", "private", "private-v6"],
    ("nodejs", "dgram"): ["bystander", "bystander-v6", "private", "private-v6", "multicast"],
    ("nodejs", "pkg-net"): ["bystander", "metadata", "private"],
    ("nodejs", "pkg-dgram"): ["bystander", "private"],
    ("python", "urllib"): ["bystander", "bystander-v6", "metadata", "private", "private-v6"],
    ("python", "http.client"): ["bystander", "bystander-v6", "metadata"],
    ("python", "tcp"): ["bystander", "bystander-v6", "metadata", "private", "private-v6"],
    ("python", "udp"): ["bystander", "bystander-v6", "private", "private-v6", "multicast"],
    ("python", "udp-connect"): ["bystander", "private"],
    ("python", "requests"): ["bystander", "metadata", "private"],
    ("python", "urllib3"): ["bystander", "metadata", "private"],
    ("python", "connect_ex"): ["bystander", "private"],
    ("python", "sendmsg"): ["bystander", "private"],
    ("python", "fastopen"): ["bystander", "private"],
}
# The raw calls fail with EACCES, but only the clients' usual methods (connect, sendto) add the explanation.
# TCP Fast Open (a connect inside sendto) is refused outright, EOPNOTSUPP: clients then fall back to connect.
UNEXPLAINED = {"connect_ex", "sendmsg", "fastopen"}
ATTEMPTS = [(language, key, target) for (language, key), targets in ATTACKED.items() for target in targets]


def attempt_params(key: str, target: str) -> dict[str, Any]:
    host, port, url = TARGETS[target]
    if key in ("fetch", "http.get", "urllib", "requests", "urllib3"):
        return {"url": url}
    if key == "http.client":
        return {"host": host, "port": port, "path": "/"}
    return {"host": host, "port": port, "payload": f"{key} to {target}"}


@pytest.mark.parametrize(("language", "key", "target"), ATTEMPTS, ids=["-".join(a) for a in ATTEMPTS])
def test_loopback_metadata_and_private_addresses_are_refused(
    public: Deployed, world: World, language: str, key: str, target: str
) -> None:
    watch = world.journal.watch()
    errnos = (EACCES, EOPNOTSUPP) if key == "fastopen" else (EACCES,)
    outcome = public.probe(language, key, **attempt_params(key, target))
    refused(outcome, words=key not in UNEXPLAINED, errnos=errnos)
    nothing_arrived(watch, udp=key in UDP_KEYS)


# -- 5. names that resolve to refused addresses: the hosts file and the nameserver (rebinding) ---------

NAMES = {  # name: (port, resolved by the nameserver)
    "loopback.test": (BYSTANDER_PORT, False),
    "metadata.test": (80, False),
    "rebind.test": (BYSTANDER_PORT, True),
    "meta.rebind.test": (80, True),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("language", "client"), [("nodejs", "fetch"), ("nodejs", "net"), ("python", "urllib"), ("python", "tcp")]
)
def test_names_resolving_to_refused_addresses_are_refused(
    public: Deployed, world: World, language: str, client: str, name: str
) -> None:
    port, by_dns = NAMES[name]
    watch = world.journal.watch()
    if client in ("fetch", "urllib"):
        outcome = public.probe(language, client, url=f"http://{name}:{port}/")
    else:
        outcome = public.probe(language, client, host=name, port=port)
    refused(outcome)
    nothing_arrived(watch)
    if by_dns:  # DNS itself works under `public`: the nameserver answered the query
        assert f"{name} 1" in watch.details("dns", "query"), watch.events()


def test_the_nameserver_answers_functions_under_public(public: Deployed, world: World) -> None:
    watch = world.journal.watch()
    assert public.probe("nodejs", "resolve4", name="rebind.test")["addresses"] == ["127.0.0.1"]
    assert public.probe("nodejs", "lookup", name="meta.rebind.test")["addresses"] == [METADATA]
    assert public.probe("python", "getaddrinfo", name="pub.test")["addresses"] == [PUBLIC]
    queries = watch.details("dns", "query")
    assert {"rebind.test 1", "meta.rebind.test 1", "pub.test 1"} <= set(queries), queries
    nothing_arrived(watch)


def test_the_nameserver_is_reachable_on_port_53_only(public: Deployed, world: World) -> None:
    nameserver = NAMESERVER
    watch = world.journal.watch()
    refused(public.probe("nodejs", "fetch", url=f"http://{nameserver}/"))
    refused(public.probe("nodejs", "net", host=nameserver, port=80))
    refused(public.probe("python", "tcp", host=nameserver, port=80))
    refused(public.probe("python", "udp", host=nameserver, port=5353, payload="not dns"))
    nothing_arrived(watch, udp=True)


# -- 6. redirects from a public server to refused addresses -----------------------------------------


@pytest.mark.parametrize("to", ["api", "metadata"])
@pytest.mark.parametrize(
    ("language", "client"), [("nodejs", "fetch"), ("python", "urllib"), ("python", "requests")]
)
def test_a_redirect_to_a_refused_address_is_refused(
    public: Deployed, world: World, language: str, client: str, to: str
) -> None:
    target = public.api("127.0.0.1") if to == "api" else METADATA_URL
    url = f"http://{PUBLIC}/redirect?to={target}"
    watch = world.journal.watch()
    refused(public.probe(language, client, url=url))
    assert watch.total() == {"public": 1}  # the first hop arrived, the second did not
    assert watch.details("public", "request") == [f"GET /redirect?to={target} "]


# -- 8. the public server is reachable -----------------------------------------------------------------

REACHABLE: list[tuple[str, str, dict[str, Any]]] = [
    ("nodejs", "fetch", {"url": f"http://{PUBLIC}/hello"}),
    ("nodejs", "fetch", {"url": "http://public.test/hello"}),
    ("nodejs", "fetch", {"url": "http://pub.test/hello"}),
    ("nodejs", "http.get", {"url": f"http://{PUBLIC}/hello"}),
    ("nodejs", "net", {"host": PUBLIC, "port": 80}),
    ("nodejs", "pkg-net", {"host": PUBLIC, "port": 80}),
    ("nodejs", "dgram", {"host": PUBLIC, "port": 80, "payload": "hello"}),
    ("nodejs", "pkg-dgram", {"host": PUBLIC, "port": 80, "payload": "hello"}),
    ("python", "urllib", {"url": f"http://{PUBLIC}/hello"}),
    ("python", "urllib", {"url": "http://pub.test/hello"}),
    ("python", "http.client", {"host": "public.test", "port": 80, "path": "/hello"}),
    ("python", "tcp", {"host": PUBLIC, "port": 80}),
    ("python", "udp", {"host": PUBLIC, "port": 80, "payload": "hello"}),
    ("python", "requests", {"url": f"http://{PUBLIC}/hello"}),
    ("python", "urllib3", {"url": f"http://{PUBLIC}/hello"}),
]


@pytest.mark.parametrize(
    ("language", "key", "params"),
    REACHABLE,
    ids=[f"{r[0]}-{r[1]}-{next(iter(r[2].values()))}" for r in REACHABLE],
)
def test_the_public_server_is_reachable(
    public: Deployed, world: World, language: str, key: str, params: dict[str, Any]
) -> None:
    watch = world.journal.watch()
    outcome = public.probe(language, key, **params)
    assert outcome["reached"] is True, outcome
    if key in UDP_KEYS:
        assert watch.wait_for("public", "datagram") == ["hello"]
        assert watch.total(settle=UDP_SETTLE_S) == {"public": 1}
        return
    assert '"listener": "public"' in outcome["body"], outcome
    assert outcome.get("status", 200) == 200, outcome
    path = "/hello" if "url" in params or "path" in params else "/raw"
    assert watch.details("public", "request") == [f"GET {path} "]
    assert watch.total() == {"public": 1}


# -- 14. the health report says the wall is on ---------------------------------------------------------


def egress_walls(service: Deployed) -> dict[str, Any]:
    """Each language's egress wall in /sys/healthcheck, after a run in each (hosts appear once started)."""
    for language in ("nodejs", "python"):
        service.probe(language, "lookup" if language == "nodejs" else "getaddrinfo", name="localhost")
    hosts = service.health()["hosts"]
    return {language: hosts[language]["egress"] for language in ("nodejs", "python")}


def test_the_health_report_shows_the_egress_wall_on(public: Deployed) -> None:
    for language, wall in egress_walls(public).items():
        assert wall["on"] is True, (language, wall)
        assert isinstance(wall["detail"], str) and wall["detail"], (language, wall)


# -- 10. after all that, the service still serves its tenants -------------------------------------------


def test_the_service_survived_the_attacks(public: Deployed) -> None:
    before = public.tenant.http.get("/v2/functions/victim").json()
    public.tenant.survived("nodejs")
    public.tenant.survived("python")
    victim_intact(public, before)


# -- 11. FUNCTIONS_EGRESS=none: no network at all ------------------------------------------------------


@pytest.mark.slow
def test_none_refuses_even_the_public_server(nothing: Deployed, world: World) -> None:
    watch = world.journal.watch()
    for language, key, params in REACHABLE:
        if "pub.test" not in str(params):  # a name of the nameserver: see the DNS test below
            refused(nothing.probe(language, key, **params))
    nothing_arrived(watch, udp=True)
    nothing.tenant.survived("nodejs")
    nothing.tenant.survived("python")


@pytest.mark.slow
def test_none_refuses_dns(nothing: Deployed, world: World) -> None:
    """Name resolution fails, quickly, and no query reaches the nameserver. The error is the resolver's
    (EAI_AGAIN, ECONNREFUSED...): the refused connect happens inside the C library, which reports its own."""
    watch = world.journal.watch()
    attempts = [
        ("nodejs", "lookup", {"name": "pub.test"}),
        ("nodejs", "resolve4", {"name": "pub.test"}),
        ("nodejs", "fetch", {"url": "http://pub.test/hello"}),
        ("python", "getaddrinfo", {"name": "pub.test"}),
        ("python", "urllib", {"url": "http://pub.test/hello"}),
    ]
    for language, key, params in attempts:
        outcome = nothing.probe(language, key, **params)
        assert outcome["reached"] is False and outcome["error"], outcome
        assert outcome.get("ms", 0) < QUICK_MS, outcome
    assert watch.details("dns", "query") == []
    nothing_arrived(watch)


@pytest.mark.slow
def test_none_refuses_the_api_and_the_private_service(nothing: Deployed, world: World) -> None:
    watch = world.journal.watch()
    for language, client in (("nodejs", "fetch"), ("python", "urllib")):
        refused(nothing.probe(language, client, url=nothing.api("127.0.0.1")))
        refused(nothing.probe(language, client, url=PRIVATE_URL))
    nothing_arrived(watch)


@pytest.mark.slow
def test_none_shows_the_egress_wall_on(nothing: Deployed) -> None:
    for language, wall in egress_walls(nothing).items():
        assert wall["on"] is True, (language, wall)
        assert "none" in wall["detail"], (language, wall)


# -- 12. FUNCTIONS_EGRESS=all: unrestricted, as before -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("language", "client"), [("nodejs", "fetch"), ("python", "urllib")])
def test_all_reaches_the_api_and_private_addresses(
    everything: Deployed, world: World, language: str, client: str
) -> None:
    watch = world.journal.watch()
    api = everything.probe(language, client, url=everything.api("127.0.0.1"))
    assert api["reached"] is True and api["status"] == 200, api
    assert "victim-original" in api["body"], api
    for target, url in (("private", PRIVATE_URL), ("metadata", METADATA_URL), ("bystander", BYSTANDER_URL)):
        outcome = everything.probe(language, client, url=url)
        assert outcome["reached"] is True and outcome["status"] == 200, outcome
        assert f'"listener": "{target}"' in outcome["body"], outcome
    assert watch.total() == {"private": 1, "metadata": 1, "bystander": 1}
    redirected = everything.probe(language, client, url=f"http://{PUBLIC}/redirect?to={PRIVATE_URL}")
    assert redirected["reached"] is True and '"listener": "private"' in redirected["body"], redirected


@pytest.mark.slow
def test_all_reaches_raw_sockets_too(everything: Deployed, world: World) -> None:
    watch = world.journal.watch()
    assert everything.probe("nodejs", "net", host=PRIVATE, port=PRIVATE_PORT)["reached"] is True
    assert everything.probe("nodejs", "dgram", host="127.0.0.1", port=BYSTANDER_PORT, payload="js")["reached"]
    assert everything.probe("python", "tcp", host="::1", port=BYSTANDER_PORT)["reached"] is True
    assert everything.probe("python", "udp", host=PRIVATE, port=PRIVATE_PORT, payload="py")["reached"]
    assert watch.wait_for("bystander", "datagram") == ["js"]
    assert watch.wait_for("private", "datagram") == ["py"]
    assert watch.count("private") == 1 and watch.count("bystander-v6") == 1


@pytest.mark.slow
def test_all_reports_the_wall_off_by_choice(everything: Deployed) -> None:
    for language, wall in egress_walls(everything).items():
        assert wall["on"] is False, (language, wall)
        assert "FUNCTIONS_EGRESS=all" in wall["reason"], (language, wall)


# -- 13. FUNCTIONS_EGRESS_ALLOW: named exceptions, and nothing more ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("language", "client"), [("nodejs", "fetch"), ("python", "urllib")])
def test_allowed_exceptions_are_reachable(
    allowing: Deployed, world: World, language: str, client: str
) -> None:
    reachable = {
        f"http://internal.test:{PRIVATE_PORT}/by-name": "private",
        f"http://{PRIVATE}:{PRIVATE_PORT}/by-address": "private",  # internal.test's address, resolved
        f"http://{PRIVATE}:{PRIVATE_OTHER_PORT}/by-range": "private-9090",
        f"http://127.0.0.1:{BYSTANDER_PORT}/by-loopback": "bystander",
    }
    for url, listener in reachable.items():
        watch = world.journal.watch()
        outcome = allowing.probe(language, client, url=url)
        assert outcome["reached"] is True and outcome["status"] == 200, (url, outcome)
        assert watch.total() == {listener: 1}, (url, watch.events())


@pytest.mark.slow
@pytest.mark.parametrize(("language", "client"), [("nodejs", "fetch"), ("python", "urllib")])
def test_what_is_not_allowed_stays_refused(
    allowing: Deployed, world: World, language: str, client: str
) -> None:
    refused_urls = [
        f"http://{PRIVATE}:{PRIVATE_UNLISTED_PORT}/another-port",
        f"http://internal.test:{PRIVATE_UNLISTED_PORT}/another-port",
        f"http://[::1]:{BYSTANDER_PORT}/not-the-allowed-address",
        allowing.api("127.0.0.1"),
        allowing.api(world.svc_address),
        METADATA_URL,
    ]
    watch = world.journal.watch()
    for url in refused_urls:
        refused(allowing.probe(language, client, url=url))
    nothing_arrived(watch)


@pytest.mark.slow
def test_allow_keeps_udp_to_other_ports_refused(allowing: Deployed, world: World) -> None:
    watch = world.journal.watch()
    refused(allowing.probe("nodejs", "dgram", host=PRIVATE, port=PRIVATE_UNLISTED_PORT, payload="x"))
    refused(allowing.probe("python", "udp", host=PRIVATE, port=PRIVATE_UNLISTED_PORT, payload="x"))
    refused(allowing.probe("python", "udp", host="::1", port=BYSTANDER_PORT, payload="x"))
    nothing_arrived(watch, udp=True)
    assert allowing.probe("python", "udp", host="127.0.0.1", port=BYSTANDER_PORT, payload="ok")["reached"]
    assert watch.wait_for("bystander", "datagram") == ["ok"]
