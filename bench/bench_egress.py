"""What the egress wall costs: host launches, warm runs, and connects made from inside functions.

    .venv/bin/python bench/bench_egress.py [--runs 300] [--connects 200] [--before CHECKOUT]

Side by side in one run (the machine's speed moves from day to day):
- a host launch through runtimes/launcher.py (`node -e 0` as the host), FUNCTIONS_EGRESS=all (no guard)
  against public (the notification filter and the hand-over of its listener);
- a warm run of a hello in each language, with the service at FUNCTIONS_EGRESS=all and at public;
- `connects` TCP connects to a loopback listener from inside a function (allowed by
  FUNCTIONS_EGRESS_ALLOW under public), against plain node and plain python3 doing the same.
With --before, the warm runs are also measured on the service of another checkout (the code before the
egress wall: `git worktree add /tmp/before <commit>`). Only loopback is used.
"""

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_service import serving  # noqa: E402

from adapters.hosts.egress_facts import machine_policy  # noqa: E402
from adapters.hosts.egress_policy import ALL, PUBLIC  # noqa: E402
from adapters.hosts.walls import HostPlan, Walls  # noqa: E402

SERVE = "from entrypoints.cli.main import main; raise SystemExit(main(['serve']))"
JS_CONNECTS = """
const net = require('net');
const started = performance.now();
for (let i = 0; i < count; i += 1) {
  await new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1', () => { sock.destroy(); resolve(); });
    sock.on('error', reject);
  });
}
return (performance.now() - started) / count;
"""
PY_CONNECTS = """
import socket, time
started = time.perf_counter()
for _ in range(count):
    socket.create_connection(("127.0.0.1", port)).close()
return (time.perf_counter() - started) * 1000 / count
"""
PLAIN_NODE = (
    "const net=require('net');const [port,count]=process.argv.slice(1).map(Number);(async()=>{"
    "const t=performance.now();for(let i=0;i<count;i++){await new Promise((r,j)=>{const s=net.connect(port,"
    "'127.0.0.1',()=>{s.destroy();r()});s.on('error',j)})}console.log((performance.now()-t)/count)})()"
)
PLAIN_PYTHON = (
    "import socket,sys,time;port,count=map(int,sys.argv[1:]);t=time.perf_counter()\n"
    "for _ in range(count): socket.create_connection(('127.0.0.1',port)).close()\n"
    "print((time.perf_counter()-t)*1000/count)"
)


@contextmanager
def listener() -> Iterator[int]:
    """A loopback server that accepts and closes connections as fast as it can."""
    server = socket.create_server(("127.0.0.1", 0), backlog=512)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@contextmanager
def service(egress: str, allow: str, root: Path = ROOT) -> Iterator[httpx.Client]:
    settings = {
        "FUNCTIONS_EGRESS": egress,
        "FUNCTIONS_EGRESS_ALLOW": allow,
        "NODE_BUILTIN_MODULES": "net,http",
        "PYTHON_BUILTIN_MODULES": "socket,time,json",
        "KERNEL_POOL_SIZE": "2",
    }
    with serving(settings, root=root) as client:
        yield client


def warm_p50(client: httpx.Client, language: str, runs: int) -> float:
    code = "return 'hello'"
    body = {"functions": {"hello": {"code": code, "language": language}}}
    assert client.post(f"/v2/functions/warm-{language}", json=body).status_code == 200
    client.post(f"/v2/functions/warm-{language}/run/hello", json={})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = client.post(f"/v2/functions/warm-{language}/run/hello", json={})
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200
    return statistics.median(times)


def connect_ms(client: httpx.Client, language: str, port: int, count: int) -> float:
    code = JS_CONNECTS if language == "nodejs" else PY_CONNECTS
    params = {"port": {"type": "integer"}, "count": {"type": "integer"}}
    body = {"functions": {"connects": {"code": code, "language": language, "parameters": params}}}
    assert client.post(f"/v2/functions/net-{language}", json=body).status_code == 200
    answer = client.post(
        f"/v2/functions/net-{language}/run/connects", json={"parameters": {"port": port, "count": 5}}
    )
    assert answer.status_code == 200, answer.text
    answer = client.post(
        f"/v2/functions/net-{language}/run/connects", json={"parameters": {"port": port, "count": count}}
    )
    assert answer.status_code == 200, answer.text
    return float(answer.json()["result"])


def launch_ms(egress: str, launches: int) -> float:
    node = shutil.which("node") or "node"
    walls = Walls(egress=machine_policy(egress))
    plan = HostPlan("bench", node, [])
    times = []
    for _ in range(launches):
        launch = walls.launch(plan, [node, "-e", "0"])
        started = time.perf_counter()
        with subprocess.Popen(launch.argv, pass_fds=launch.pass_fds, env={}) as process:
            launch.started(process.pid)
            process.wait()
        times.append((time.perf_counter() - started) * 1000)
        launch.cleanup()
        assert process.returncode == 0
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--launches", type=int, default=30)
    parser.add_argument("--before", type=Path, help="a checkout whose service is measured too (warm runs)")
    args = parser.parse_args()
    if args.before:
        with service(ALL, "", root=args.before.resolve()) as client:
            for language in ("nodejs", "python"):
                p50 = warm_p50(client, language, args.runs)
                print(f"  before the wall       {language:<6} warm hello p50 {p50:6.2f} ms")
    print(f"host launch (node -e 0), median of {args.launches}:")
    for egress in (ALL, PUBLIC):
        print(f"  FUNCTIONS_EGRESS={egress:<6} {launch_ms(egress, args.launches):7.2f} ms")
    with listener() as port:
        plain_node = subprocess.run(
            ["node", "-e", PLAIN_NODE, str(port), str(args.connects)],
            capture_output=True,
            text=True,
            check=True,
        )
        plain_python = subprocess.run(
            [sys.executable, "-c", PLAIN_PYTHON, str(port), str(args.connects)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(
            f"one loopback connect, mean of {args.connects}: plain node {float(plain_node.stdout):.3f} ms, "
            f"plain python3 {float(plain_python.stdout):.3f} ms"
        )
        for egress in (ALL, PUBLIC):
            with service(egress, f"127.0.0.1:{port}") as client:
                for language in ("nodejs", "python"):
                    p50 = warm_p50(client, language, args.runs)
                    per_connect = connect_ms(client, language, port, args.connects)
                    print(
                        f"  FUNCTIONS_EGRESS={egress:<6} {language:<6} warm hello p50 {p50:6.2f} ms, "
                        f"connect inside a function {per_connect:6.3f} ms"
                    )


if __name__ == "__main__":
    main()
