"""Benchmark of the core service: warm latency, throughput, cold start and memory per worker.

Runs the service (`functions serve`) and a bare Starlette + Hypercorn app (bench/bare_app.py) on
127.0.0.1, drives both with the same clients, and prints the figures next to their targets.

    .venv/bin/python bench/run.py [--json PATH]

Every server it starts is stopped on the way out, also on errors and Ctrl-C.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

from bench_http import Answer, Connection
from bench_load import Latency, Throughput, concurrent_load, latency_of, sequential_latency
from bench_procs import Processes, cpu_seconds, free_port, machine, node_host_pid, rss_kib, wait_healthy
from bench_report import TARGETS, Row, judged, table

BENCH = Path(__file__).resolve().parent
HELLO = {
    "functions": {"hello": {"code": 'return "Hello " + name;', "parameters": {"name": {"type": "string"}}}}
}
RUN_BODY = {"parameters": {"name": "world"}}
RUN_PATH = "/v2/functions/bench/run/hello"


@dataclass(frozen=True)
class Server:
    port: int
    pid: int
    node: bool  # whether a Node host child belongs to it


@contextmanager
def served(
    procs: Processes, command: list[str], env: dict[str, str], port: int, log: Path, node_host: bool
) -> Iterator[Server]:
    with log.open("wb") as out:
        popen = procs.start(command, env, out)
    try:
        wait_healthy(port, popen, log)
        if node_host:  # the service's Node host lives in a session of its own: stop it too
            procs.adopt(popen, wait_for_node_host(popen.pid))
        yield Server(port, popen.pid, node_host)
    finally:
        procs.stop(popen)


def wait_for_node_host(service_pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return node_host_pid(service_pid)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def service(procs: Processes, logs: Path, name: str) -> AbstractContextManager[Server]:
    storage = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=logs))
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(storage),
        "FUNCTIONS_WORKERS_MAX_LRU": "1000",  # above the 500 workspaces of the RSS step: nothing evicted
        "INACTIVE_NODE_WORKER_DELETION_TIMEOUT": "3600",  # nor reaped while idle during the run
    }
    command = [str(Path(sys.executable).with_name("functions")), "serve"]
    return served(procs, command, env, port, logs / f"{name}.log", node_host=True)


def bare(procs: Processes, logs: Path) -> AbstractContextManager[Server]:
    port = free_port()
    command = [sys.executable, str(BENCH / "bare_app.py"), str(port)]
    return served(procs, command, dict(os.environ), port, logs / "bare.log", node_host=False)


def expect(answer: Answer, what: str) -> Answer:
    if answer.status != 200:
        raise RuntimeError(f"{what}: HTTP {answer.status} {answer.body[:500]!r}")
    return answer


def save_and_run(connection: Connection, workspace: str, body: Any = HELLO) -> tuple[int, int, Answer]:
    """Times (ns) of the save and of the first run of a new workspace (`hello` in `body`), and its answer."""
    start = time.perf_counter_ns()
    expect(connection.request("POST", f"/v2/functions/{workspace}", body), f"save {workspace}")
    saved = time.perf_counter_ns()
    answer = connection.request("POST", f"/v2/functions/{workspace}/run/hello", RUN_BODY)
    done = time.perf_counter_ns()
    expect(answer, f"first run of {workspace}")
    if answer.json().get("result") != "Hello world":
        raise RuntimeError(f"first run of {workspace}: unexpected answer {answer.body!r}")
    return saved - start, done - saved, answer


def once(port: int, action: Callable[[Connection], object]) -> None:
    """A check before measuring, on a connection of its own."""
    connection = Connection(port)
    try:
        action(connection)
    finally:
        connection.close()


@dataclass(frozen=True)
class Warm:
    sequential: Latency
    concurrent: Throughput
    cpu_us_per_request: float  # server-side CPU (with its Node host) per request under load


def measure_warm(server: Server, args: argparse.Namespace) -> Warm:
    progress(f"  sequential: {args.warmup} warm-up + {args.runs} runs on one connection")
    sequential = sequential_latency(server.port, RUN_PATH, RUN_BODY, args.warmup, args.runs)
    progress(f"  concurrent: {args.connections} connections for {args.seconds:g} s")
    # CPU per request moves far less than wall-clock figures when others share the machine.
    pids = [server.pid, *([node_host_pid(server.pid)] if server.node else [])]
    before = cpu_seconds(pids)
    concurrent = concurrent_load(server.port, RUN_PATH, RUN_BODY, args.connections, args.seconds)
    cpu_us = (cpu_seconds(pids) - before) / max(concurrent.requests, 1) * 1e6
    return Warm(sequential, concurrent, cpu_us)


@dataclass(frozen=True)
class Cold:
    workspaces: int
    pause_s: float  # idle time before each save
    save_and_run: Latency
    first_run: Latency
    cold_answers: int  # first runs answered with X-Functions-Worker: cold


def measure_cold(port: int, count: int, pause: float, prefix: str, body: Any = HELLO) -> Cold:
    connection = Connection(port)
    totals, runs, cold = [], [], 0
    try:
        for i in range(count):
            # With a pause the service is quiet, as when a user saves, and the host's spare worker is
            # ready; without one, each save also waits for the spare that the previous one used up.
            time.sleep(pause)
            save_ns, run_ns, answer = save_and_run(connection, f"{prefix}-{i}", body)
            totals.append(save_ns + run_ns)
            runs.append(run_ns)
            cold += answer.headers.get("x-functions-worker") == "cold"
    finally:
        connection.close()
    return Cold(count, pause, latency_of(totals, 0), latency_of(runs, 0), cold)


@dataclass(frozen=True)
class RssPoint:
    workspaces: int
    workers_reported: int  # what /sys/healthcheck says is live: checks nothing was evicted
    service_kib: int
    node_host_kib: int
    fill: Latency | None  # save + first run of the workspaces added since the previous point, back to back


def live_workers(connection: Connection) -> int:
    health = expect(connection.request("GET", "/sys/healthcheck"), "healthcheck").json()
    workers: int = health["runtimes"]["nodejs"]["workers"]
    return workers


def measure_rss(server: Server, checkpoints: list[int]) -> list[RssPoint]:
    connection = Connection(server.port)
    node_pid = node_host_pid(server.pid)
    points, saved = [], 0
    try:
        for target in checkpoints:
            progress(f"  filling up to {target} workspaces")
            fill = [sum(save_and_run(connection, f"rss-{i}")[:2]) for i in range(saved, target)]
            saved = target
            time.sleep(1.0)  # let in-flight allocations and the spare worker settle before reading RSS
            workers = live_workers(connection)
            filled = latency_of(fill, 0) if fill else None
            points.append(RssPoint(target, workers, rss_kib(server.pid), rss_kib(node_pid), filled))
    finally:
        connection.close()
    return points


def per_worker_kib(points: list[RssPoint]) -> dict[str, float]:
    low, high = points[-2], points[-1]
    span = high.workspaces - low.workspaces
    service = (high.service_kib - low.service_kib) / span
    node = (high.node_host_kib - low.node_host_kib) / span
    return {"service": service, "node_host": node, "total": service + node}


STARTED = time.monotonic()


def progress(message: str) -> None:
    # On stderr with the elapsed time, so the figures on stdout stay clean and a slow phase shows.
    print(f"[{time.monotonic() - STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


def log_problems(log: Path) -> list[str]:
    """Warning and error lines of a server log (JSON lines, or Hypercorn's plain text before set-up)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            level = str(json.loads(line).get("level", "")).lower()
        except (ValueError, AttributeError):
            level = "error" if any(w in line for w in ("ERROR", "Traceback", "WARNING")) else ""
        if level in ("warning", "error", "critical"):
            found.append(line)
    return found


@dataclass(frozen=True)
class Figures:
    machine: dict[str, str]
    service: Warm
    bare: Warm
    cold: Cold
    cold_burst: Cold
    rss: list[RssPoint]
    rss_per_worker_kib: dict[str, float]
    log_problems: dict[str, list[str]]


def measure_all(args: argparse.Namespace, procs: Processes, logs: Path, info: dict[str, str]) -> Figures:
    progress("bare Starlette + Hypercorn app")
    with bare(procs, logs) as server:
        once(server.port, lambda connection: expect(connection.request("POST", RUN_PATH, RUN_BODY), "run"))
        bare_warm = measure_warm(server, args)
    progress("service")
    with service(procs, logs, "service") as server:
        once(server.port, lambda connection: save_and_run(connection, "bench"))
        service_warm = measure_warm(server, args)
        progress(f"  cold start: {args.cold} new workspaces, {args.cold_pause:g} s apart, then back to back")
        cold = measure_cold(server.port, args.cold, args.cold_pause, "cold")
        cold_burst = measure_cold(server.port, args.cold, 0.0, "burst")
    progress("service, fresh, for memory")
    with service(procs, logs, "service-rss") as server:
        rss = measure_rss(server, args.rss_workspaces)
    problems = {name: log_problems(logs / f"{name}.log") for name in ("bare", "service", "service-rss")}
    return Figures(info, service_warm, bare_warm, cold, cold_burst, rss, per_worker_kib(rss), problems)


def checked(f: Figures) -> dict[str, float]:
    """The figures that have a target, by target name."""
    return {
        "sequential_p50_ms": f.service.sequential.p50_ms,
        "sequential_p99_ms": f.service.sequential.p99_ms,
        "throughput_ratio": f.service.concurrent.runs_per_s / f.bare.concurrent.runs_per_s,
        "concurrent_p99_ms": f.service.concurrent.p99_ms,
        "cold_save_and_run_p50_ms": f.cold.save_and_run.p50_ms,
        "cold_burst_save_and_run_p50_ms": f.cold_burst.save_and_run.p50_ms,
        "rss_per_worker_mib": f.rss_per_worker_kib["total"] / 1024,
    }


def sequential_rows(f: Figures) -> list[Row]:
    s, b = f.service.sequential, f.bare.sequential
    return [
        judged("service p50", s.p50_ms, "sequential_p50_ms"),
        judged("service p99", s.p99_ms, "sequential_p99_ms"),
        Row("service mean / max", f"{s.mean_ms:.3f} / {s.max_ms:.3f} ms"),
        Row("bare p50 / p99 / mean", f"{b.p50_ms:.3f} / {b.p99_ms:.3f} / {b.mean_ms:.3f} ms"),
        Row("service/bare p50 / p99", f"{s.p50_ms / b.p50_ms:.2f}× / {s.p99_ms / b.p99_ms:.2f}×"),
        Row("non-200 answers service / bare", f"{s.errors} / {b.errors} of {s.runs}"),
        Row("keep-alive closed by server service / bare", f"{s.reconnects} / {b.reconnects} times"),
    ]


def concurrent_rows(f: Figures) -> list[Row]:
    s, b = f.service.concurrent, f.bare.concurrent
    return [
        Row("service runs/s", f"{s.runs_per_s:,.0f}"),
        Row("bare runs/s", f"{b.runs_per_s:,.0f}"),
        judged("service/bare throughput", s.runs_per_s / b.runs_per_s, "throughput_ratio", ".2f"),
        Row("service p50", f"{s.p50_ms:.2f} ms"),
        judged("service p99", s.p99_ms, "concurrent_p99_ms", ".2f"),
        Row("bare p50 / p99", f"{b.p50_ms:.2f} / {b.p99_ms:.2f} ms"),
        Row("service/bare p50 / p99", f"{s.p50_ms / b.p50_ms:.2f}× / {s.p99_ms / b.p99_ms:.2f}×"),
        Row("errors service / bare", f"{s.errors} of {s.requests:,} / {b.errors} of {b.requests:,}"),
        Row(
            "server CPU per request: service (+ Node host) / bare",
            f"{f.service.cpu_us_per_request:.0f} / {f.bare.cpu_us_per_request:.0f} µs",
        ),
    ]


def cold_rows(c: Cold, key: str) -> list[Row]:
    when = f"{c.pause_s:g} s apart" if c.pause_s else "back to back"
    return [
        judged(f"{when}: save + first run p50", c.save_and_run.p50_ms, key, ".1f"),
        Row(f"{when}: save + first run max", f"{c.save_and_run.max_ms:.1f} ms"),
        Row(f"{when}: first run alone p50 / max", f"{c.first_run.p50_ms:.1f} / {c.first_run.max_ms:.1f} ms"),
        Row(f"{when}: first runs answered `cold`", f"{c.cold_answers} of {c.workspaces}"),
    ]


def rss_rows(f: Figures) -> list[Row]:
    rows = [
        Row(
            f"workspaces: {p.workspaces} (live workers: {p.workers_reported})",
            f"service {p.service_kib / 1024:.1f} MiB, node host {p.node_host_kib / 1024:.1f} MiB",
        )
        for p in f.rss
    ]
    per = f.rss_per_worker_kib
    span = f"{f.rss[-2].workspaces}→{f.rss[-1].workspaces}"
    rows.append(Row(f"per worker, service ({span})", f"{per['service']:.0f} KiB"))
    rows.append(Row(f"per worker, node host ({span})", f"{per['node_host'] / 1024:.2f} MiB"))
    rows.append(judged("per worker, total", per["total"] / 1024, "rss_per_worker_mib", ".2f"))
    return rows + fill_rows(f.rss)


def fill_rows(points: list[RssPoint]) -> list[Row]:
    """How a save + first run fares as workers pile up: a cost that grows with them shows here."""
    rows, low = [], 0
    for p in points:
        if p.fill is not None:
            label = f"save + first run, workspaces {low + 1}–{p.workspaces}, p50 / max"
            rows.append(Row(label, f"{p.fill.p50_ms:.1f} / {p.fill.max_ms:.1f} ms"))
        low = p.workspaces
    return rows


def report(f: Figures, args: argparse.Namespace) -> str:
    client = f.service.concurrent.client
    parts = [
        table(f"Warm `hello`, sequential ({args.runs} runs, one keep-alive connection)", sequential_rows(f)),
        table(
            f"Warm `hello`, {args.connections} connections for {args.seconds:g} s ({client})",
            concurrent_rows(f),
        ),
        table(
            f"Cold start ({args.cold} new workspaces, end to end over HTTP)",
            cold_rows(f.cold, "cold_save_and_run_p50_ms")
            + cold_rows(f.cold_burst, "cold_burst_save_and_run_p50_ms"),
        ),
        table("Memory (VmRSS)", rss_rows(f)),
    ]
    for name, lines in f.log_problems.items():
        if lines:
            parts.append(
                f"\n{len(lines)} warning/error lines in the {name} log; first ones:\n" + "\n".join(lines[:5])
            )
    return "\n".join(parts)


def machine_text(info: dict[str, str]) -> str:
    return "## Machine\n\n" + "\n".join(f"- {key}: {value}" for key, value in info.items())


def as_json(f: Figures) -> dict[str, Any]:
    targets = {
        key: {"value": value, "target": TARGETS[key].describe(), "pass": TARGETS[key].met_by(value)}
        for key, value in checked(f).items()
    }
    return {**asdict(f), "targets": targets}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON")
    cli.add_argument("--runs", type=int, default=2000, help="measured sequential runs (default 2000)")
    cli.add_argument("--warmup", type=int, default=200, help="sequential warm-up runs (default 200)")
    cli.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    cli.add_argument("--seconds", type=float, default=10.0, help="concurrent test length (default 10)")
    cli.add_argument("--cold", type=int, default=20, help="new workspaces for cold start (default 20)")
    cli.add_argument("--cold-pause", type=float, default=0.2, help="idle seconds before each (default 0.2)")
    cli.add_argument(
        "--rss-workspaces",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 100, 500],
        help="workspace counts at which RSS is read; the last two give the increment (default 1,100,500)",
    )
    return cli.parse_args(argv)


def interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM too unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    info = machine()
    print(machine_text(info), flush=True)
    try:
        # Processes exits first: the servers are stopped before their storage and logs are removed.
        with tempfile.TemporaryDirectory(prefix="functions-bench-") as tmp, Processes() as procs:
            figures = measure_all(args, procs, Path(tmp), info)
    except KeyboardInterrupt:
        progress("interrupted; every server this run started has been stopped")
        return 130
    print(report(figures, args))
    if args.json:
        args.json.write_text(json.dumps(as_json(figures), indent=2, ensure_ascii=False) + "\n")
        progress(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
