"""A small world for the egress tests, in network namespaces of their own: nothing reaches a real network.

Two namespaces, named after the pytest process:

- `svc` runs the service under test. Its default route leads to `world` and nowhere else; a veth pair in
  198.18.0.0/15 (the benchmark range) joins it to the root namespace, so the tests reach its API at
  http://198.18.<k>.2:<port>. /etc/netns/<svc>/ gives it a resolv.conf (`nameserver 10.77.0.53`) and a
  hosts file (`loopback.test`, `metadata.test`, `internal.test`, `public.test`), which `ip netns exec`
  mounts over /etc. A "bystander" listens on its loopback (127.0.0.1 and ::1): a local service that
  functions must not reach.
- `world` holds the modelled targets on its loopback: the metadata endpoint 169.254.169.254:80, a private
  service 10.77.0.10 (8080, 9090, 9091) and [fd77::10]:8080 (unique-local), a nameserver 10.77.0.53:53
  (with a web server on its port 80, which must stay out of reach) and a "public" server 203.0.113.10:80
  (TEST-NET-3, public to the policy) that also answers `/redirect?to=URL` with a 302 to URL.

Listeners run as `python -m tests.security.egress_world listen LOG SPEC` inside their namespace and write
one JSON line per connection, request, datagram and DNS query to LOG, which the tests read (`Journal`,
`Watch`). Run as a program, this module needs only the standard library.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[2]
SERVE = "from entrypoints.cli.main import main; raise SystemExit(main(['serve']))"

METADATA = "169.254.169.254"
PRIVATE = "10.77.0.10"
NAMESERVER = "10.77.0.53"
PUBLIC = "203.0.113.10"
PRIVATE_V6 = "fd77::10"  # a unique-local (private) IPv6 service, on the `world` side of fd77:1::/64
PRIVATE_PORT, PRIVATE_OTHER_PORT, PRIVATE_UNLISTED_PORT = 8080, 9090, 9091
BYSTANDER_PORT = 7000
# Names of svc's hosts file (besides localhost) and of the nameserver in `world`.
HOSTS = {
    "loopback.test": "127.0.0.1",
    "metadata.test": METADATA,
    "internal.test": PRIVATE,
    "public.test": PUBLIC,
}
DNS_ANSWERS = {"rebind.test": "127.0.0.1", "meta.rebind.test": METADATA, "pub.test": PUBLIC}

# name: (address, port, tcp, udp) of the listeners in `world`; the bystander is in `svc`.
WORLD_LISTENERS: dict[str, tuple[str, int, bool, bool]] = {
    "metadata": (METADATA, 80, True, False),
    "private": (PRIVATE, PRIVATE_PORT, True, True),
    "private-9090": (PRIVATE, PRIVATE_OTHER_PORT, True, False),
    "private-9091": (PRIVATE, PRIVATE_UNLISTED_PORT, True, True),
    "public": (PUBLIC, 80, True, True),
    "private-v6": (PRIVATE_V6, PRIVATE_PORT, True, True),
    "nameserver-80": (NAMESERVER, 80, True, False),  # the nameserver is reachable on port 53 only
}
BYSTANDER: dict[str, tuple[str, int, bool, bool]] = {
    "bystander": ("127.0.0.1", BYSTANDER_PORT, True, True),
    "bystander-v6": ("::1", BYSTANDER_PORT, True, True),
}


class NamespacesUnavailable(Exception):
    """This machine (or this user) cannot make the network namespaces the tests need."""


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


# -- the journal: what the listeners saw ------------------------------------------------------------


@dataclass
class Journal:
    """The JSON lines the listener processes write: one event per line."""

    paths: list[Path] = field(default_factory=list)

    def lines(self) -> list[list[dict[str, Any]]]:
        found = []
        for path in self.paths:
            text = path.read_text() if path.exists() else ""
            # a line being written has no newline yet: left for the next read
            found.append([json.loads(line) for line in text.split("\n")[:-1] if line])
        return found

    def watch(self) -> "Watch":
        return Watch(self, [len(events) for events in self.lines()])


@dataclass
class Watch:
    """The events written since it was made."""

    journal: Journal
    start: list[int]

    def events(self, settle: float = 0.0) -> list[dict[str, Any]]:
        if settle:
            time.sleep(settle)  # a datagram sent just now may not be logged yet
        every = self.journal.lines()
        return [event for events, start in zip(every, self.start, strict=True) for event in events[start:]]

    def count(self, listener: str, event: str = "connect", settle: float = 0.0) -> int:
        return sum(1 for e in self.events(settle) if e["listener"] == listener and e["event"] == event)

    def details(self, listener: str, event: str, settle: float = 0.0) -> list[str]:
        return [e["detail"] for e in self.events(settle) if e["listener"] == listener and e["event"] == event]

    def wait_for(self, listener: str, event: str, timeout: float = 3.0) -> list[str]:
        """The details of `event` at `listener`, once there is one (or [] after the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.details(listener, event)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def total(self, settle: float = 0.0) -> dict[str, int]:
        """Connections and datagrams per listener (DNS queries left out)."""
        counts: dict[str, int] = {}
        for event in self.events(settle):
            if event["event"] in ("connect", "datagram"):
                counts[event["listener"]] = counts.get(event["listener"], 0) + 1
        return counts


# -- the network ------------------------------------------------------------------------------------


@dataclass
class World:
    """The two namespaces, their links and listeners; `svc_address` is the service's side of the veth."""

    tag: str
    svc: str
    world: str
    k: int
    folder: Path
    journal: Journal = field(default_factory=Journal)
    processes: list["subprocess.Popen[bytes]"] = field(default_factory=list)

    @property
    def root_address(self) -> str:
        return f"198.18.{self.k}.1"

    @property
    def svc_address(self) -> str:
        return f"198.18.{self.k}.2"

    @property
    def svc_world_address(self) -> str:
        """svc's address on its link to `world`: another address of the service's machine."""
        return f"198.19.{self.k}.1"

    @property
    def world_address(self) -> str:
        return f"198.19.{self.k}.2"

    def in_svc(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.svc, *argv]

    def in_world(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.world, *argv]


def _free_k() -> int:
    """A third octet for 198.18.k.0/30 and 198.19.k.0/30 that the root namespace does not use yet."""
    used = ip("-4", "addr") + ip("-4", "route")
    for step in range(250):
        k = (os.getpid() + step) % 250 + 1
        if f"198.18.{k}." not in used and f"198.19.{k}." not in used:
            return k
    raise NamespacesUnavailable("no free 198.18.k.0/30 for the svc link")


def _build(world: World) -> None:
    svc, other, tag = world.svc, world.world, world.tag
    root_end, svc_end, svc_out, world_end = f"{tag}r", f"{tag}s", f"{tag}w", f"{tag}x"
    ip("netns", "add", svc)
    ip("netns", "add", other)
    for name in (svc, other):
        ip("-n", name, "link", "set", "lo", "up")
    # root <-> svc
    ip("link", "add", root_end, "type", "veth", "peer", "name", svc_end, "netns", svc)
    ip("addr", "add", f"{world.root_address}/30", "dev", root_end)
    ip("link", "set", root_end, "up")
    ip("-n", svc, "addr", "add", f"{world.svc_address}/30", "dev", svc_end)
    ip("-n", svc, "link", "set", svc_end, "up")
    # svc <-> world; svc's default route leads there and nowhere else
    ip("-n", svc, "link", "add", svc_out, "type", "veth", "peer", "name", world_end, "netns", other)
    ip("-n", svc, "addr", "add", f"{world.svc_world_address}/30", "dev", svc_out)
    ip("-n", svc, "link", "set", svc_out, "up")
    ip("-n", other, "addr", "add", f"{world.world_address}/30", "dev", world_end)
    ip("-n", other, "link", "set", world_end, "up")
    ip("-n", svc, "route", "add", "default", "via", world.world_address)
    for address in (METADATA, PRIVATE, NAMESERVER, PUBLIC):
        ip("-n", other, "addr", "add", f"{address}/32", "dev", "lo")
    # IPv6: only the unique-local service, routed to `world`
    ip("-n", svc, "addr", "add", "fd77:1::1/64", "dev", svc_out, "nodad")
    ip("-n", other, "addr", "add", "fd77:1::2/64", "dev", world_end, "nodad")
    ip("-n", other, "addr", "add", f"{PRIVATE_V6}/128", "dev", "lo")
    ip("-n", svc, "-6", "route", "add", "fd77::/64", "via", "fd77:1::2")
    # what `ip netns exec <svc>` mounts over /etc/resolv.conf and /etc/hosts
    etc = Path("/etc/netns") / svc
    etc.mkdir(parents=True)
    (etc / "resolv.conf").write_text(f"nameserver {NAMESERVER}\noptions timeout:1 attempts:1\n")
    hosts = ["127.0.0.1 localhost", "::1 localhost", *(f"{a} {name}" for name, a in HOSTS.items())]
    (etc / "hosts").write_text("\n".join(hosts) + "\n")
    for path in (etc, etc / "resolv.conf", etc / "hosts"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _tear_down(world: World) -> list[str]:
    """Undo whatever of `_build` happened; returns what could not be undone."""
    problems = []
    for process in world.processes:
        _stop(process)
    for name in (world.svc, world.world):
        # whatever still runs inside a namespace of ours was started by these tests
        for pid in ip("netns", "pids", name, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if name in ip("netns", "list", check=False).split():
            try:
                ip("netns", "del", name)
            except RuntimeError as exc:
                problems.append(str(exc))
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    ip("link", "del", f"{world.tag}r", check=False)  # gone with its peer's namespace, normally
    try:
        Path("/etc/netns").rmdir()  # only if no one else has a folder there
    except OSError:
        pass
    shutil.rmtree(world.folder, ignore_errors=True)
    return problems


def _stop(process: "subprocess.Popen[Any]") -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _start_listeners(world: World, argv_prefix: list[str], log: Path, spec: dict[str, Any]) -> None:
    argv = [*argv_prefix, sys.executable, "-m", "tests.security.egress_world", "listen", str(log)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([*argv, json.dumps(spec)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    world.processes.append(process)
    world.journal.paths.append(log)
    deadline = time.monotonic() + 10
    while not (log.exists() and '"ready"' in log.read_text()):
        if process.poll() is not None:
            raise RuntimeError(f"the listeners {spec} ended with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the listeners {spec} did not start within 10 s")
        time.sleep(0.02)


@contextmanager
def network_world() -> Iterator[World]:
    """The namespaces, links, hosts files and listeners; everything removed afterwards, even on failure.

    NamespacesUnavailable if this process cannot make network namespaces (not root, no `ip`).
    """
    if os.geteuid() != 0:
        raise NamespacesUnavailable("needs root to make network namespaces")
    if shutil.which("ip") is None:
        raise NamespacesUnavailable("needs iproute2's `ip`")
    _sweep_stale()
    tag = f"egr{os.getpid()}"
    probe = f"{tag}-probe"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        raise NamespacesUnavailable(str(exc)) from exc
    ip("netns", "del", probe, check=False)
    folder = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    folder.chmod(0o755)  # the service's storage may go here, for hosts running as an unprivileged user
    world = World(tag, f"{tag}-svc", f"{tag}-world", _free_k(), folder)
    try:
        _build(world)
        listeners: dict[str, Any] = {"tcp": [], "udp": [], "dns": [NAMESERVER, 53, DNS_ANSWERS]}
        for name, (address, port, tcp, udp) in WORLD_LISTENERS.items():
            _add(listeners, name, address, port, tcp, udp)
        _start_listeners(world, world.in_world(), folder / "world.log", listeners)
        bystander: dict[str, Any] = {"tcp": [], "udp": [], "dns": None}
        for name, (address, port, tcp, udp) in BYSTANDER.items():
            _add(bystander, name, address, port, tcp, udp)
        _start_listeners(world, world.in_svc(), folder / "svc.log", bystander)
        yield world
    finally:
        problems = _tear_down(world)
        assert not problems, problems


def _sweep_stale() -> None:
    """Remove the namespaces (and /etc/netns folders) of earlier runs whose pytest was killed before its
    teardown: named egr<pid>-svc or egr<pid>-world, with no process <pid> any more."""
    for name in ip("netns", "list", check=False).split():
        match = re.fullmatch(r"egr(\d+)-(svc|world|probe)", name)
        if match is None or _alive(int(match[1])):
            continue
        ip("netns", "del", name, check=False)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _add(spec: dict[str, Any], name: str, address: str, port: int, tcp: bool, udp: bool) -> None:
    if tcp:
        spec["tcp"].append([name, address, port])
    if udp:
        spec["udp"].append([name, address, port])


# -- the service in `svc` ---------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    port: int
    process: "subprocess.Popen[str]"


def _get_json(url: str, deadline: float, server: "subprocess.Popen[str]", log: Any) -> object:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy of the environment
    while True:
        try:
            with opener.open(url, timeout=1) as answer:
                return json.load(answer)
        except (OSError, urllib.error.URLError):
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the service ended with {server.returncode}: {log.read()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def serving_in(world: World, storage: Path, port: int, **environ: str) -> Iterator[Service]:
    """`functions serve` inside `svc` on 0.0.0.0:`port` (as tests/e2e/serving.py starts it), reached from
    here through the veth; it must end with status 0 and no traceback."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in ("FUNCTIONS_API_KEY", "FUNCTIONS_EGRESS", "FUNCTIONS_EGRESS_ALLOW")
    }
    env = {
        **inherited,
        "HOST": "0.0.0.0",
        "PORT": str(port),
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(storage),
        **environ,
    }
    with tempfile.TemporaryFile("w+") as log:
        argv = world.in_svc(sys.executable, "-c", SERVE)
        server = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=log, text=True)
        url = f"http://{world.svc_address}:{port}"
        try:
            _get_json(f"{url}/sys/healthcheck", time.monotonic() + 30, server, log)
            yield Service(url, port, server)
        finally:
            server.send_signal(signal.SIGTERM)  # `ip netns exec` execs: this is the service itself
            try:
                server.wait(timeout=25)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
            log.seek(0)
            err = log.read()
    assert server.returncode == 0, err
    assert "Traceback" not in err, err


# -- the listeners (run inside a namespace, standard library only) ----------------------------------


class _Log:
    def __init__(self, path: str) -> None:
        self.file = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def write(self, listener: str, event: str, peer: Any = None, detail: str = "") -> None:
        line = json.dumps({"listener": listener, "event": event, "peer": str(peer), "detail": detail})
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    name = ""
    log: _Log


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    timeout = 5
    protocol_version = "HTTP/1.0"

    @property
    def _server(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        self._server.log.write(self._server.name, "connect", self.client_address)
        super().setup()

    def _answer(self) -> None:
        server = self._server
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        server.log.write(server.name, "request", self.client_address, f"{self.command} {self.path} {body}")
        where = urlsplit(self.path)
        if where.path == "/redirect":
            self.send_response(302)
            self.send_header("location", parse_qs(where.query).get("to", ["/"])[0])
            self.send_header("content-length", "0")
            self.end_headers()
            return
        answer = json.dumps({"listener": server.name, "method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _receive(sock: socket.socket, name: str, log: _Log) -> None:
    while True:
        data, peer = sock.recvfrom(65536)
        log.write(name, "datagram", peer, data[:200].decode(errors="replace"))


def dns_answer(query: bytes, answers: dict[str, str]) -> tuple[bytes, str]:
    """The answer to one DNS query: an A record for a name of `answers`, no record of another type for
    it (NODATA), NXDOMAIN for any other name. ValueError if `query` is not a DNS query."""
    try:
        ident, flags, questions = struct.unpack("!HHH", query[:6])
        offset, labels = 12, []
        while query[offset]:
            length = query[offset]
            labels.append(query[offset + 1 : offset + 1 + length].decode("ascii"))
            offset += 1 + length
        qtype, _qclass = struct.unpack("!HH", query[offset + 1 : offset + 5])
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError("not a DNS query") from exc
    if questions != 1 or flags & 0x8000:
        raise ValueError("not a DNS query of one question")
    question = query[12 : offset + 5]
    name = ".".join(labels).lower()
    address = answers.get(name)
    records = b""
    if address is None:
        rcode = 3  # NXDOMAIN
    else:
        rcode = 0
        if qtype == 1:  # A
            records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
    header = struct.pack(
        "!HHHHHH", ident, 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode, 1, 1 if records else 0, 0, 0
    )
    return header + question + records, f"{name} {qtype}"


def _serve_dns(sock: socket.socket, answers: dict[str, str], log: _Log) -> None:
    while True:
        query, peer = sock.recvfrom(4096)
        try:
            answer, asked = dns_answer(query, answers)
        except ValueError:
            log.write("dns", "datagram", peer, "not a DNS query")
            continue
        log.write("dns", "query", peer, asked)
        sock.sendto(answer, peer)


def listen(log_path: str, spec: dict[str, Any]) -> None:
    """Bind every listener of `spec`, say "ready" in the log, then serve until ended by a signal."""
    log = _Log(log_path)
    threads = []
    for name, address, port in spec["tcp"]:
        kind = _Server6 if ":" in address else _Server
        server = kind((address, port), _Handler)
        server.name, server.log = name, log
        threads.append(threading.Thread(target=server.serve_forever, daemon=True))
    for name, address, port in spec["udp"]:
        udp = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((address, port))
        threads.append(threading.Thread(target=_receive, args=(udp, name, log), daemon=True))
    if spec.get("dns"):
        address, port, answers = spec["dns"]
        dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dns.bind((address, port))
        threads.append(threading.Thread(target=_serve_dns, args=(dns, answers, log), daemon=True))
    for thread in threads:
        thread.start()
    log.write("-", "ready")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    if sys.argv[1:2] == ["listen"] and len(sys.argv) == 4:
        listen(sys.argv[2], json.loads(sys.argv[3]))
    else:
        raise SystemExit("usage: python -m tests.security.egress_world listen LOG SPEC-JSON")
