"""Benchmark of the Python runtime over HTTP (issue 3 §5): warm latency and throughput, cold start, memory
per resident workspace, and a CPU-bound function on 1 vs 4 workspaces.

Runs `functions serve` (KERNEL_POOL_SIZE=2 by default) on 127.0.0.1 with python workspaces, and a bare
Starlette + Hypercorn app (bench/bare_app.py) for the HTTP floor; the clients, the process helpers and the
report are bench/run.py's. Prints the figures next to their targets.

    .venv/bin/python bench/python_http.py [--json PATH]

Every server it starts (and the service's Node host and Python kernels) is stopped on the way out, also
on errors and Ctrl-C.
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_http import Connection
from bench_load import Latency, Throughput, concurrent_load, latency_of, sequential_latency
from bench_procs import Processes, cpu_seconds, free_port, kernel_pids, machine, rss_kib
from bench_report import TARGETS, Row, Target, judged, judged_by, table
from run import (
    RUN_BODY,
    RUN_PATH,
    Cold,
    Server,
    bare,
    cold_rows,
    expect,
    interrupt,
    log_problems,
    machine_text,
    measure_cold,
    once,
    progress,
    save_and_run,
    served,
)

HELLO = {
    "functions": {
        "hello": {
            "code": 'return "Hello " + name',
            "language": "python",
            "parameters": {"name": {"type": "string"}},
        }
    }
}
BURN = {"functions": {"burn": {"code": "return sum(i*i for i in range(10**6))", "language": "python"}}}
BURN_RESULT = sum(i * i for i in range(10**6))

TARGETS.update(
    {
        "python_sequential_p50_ms": Target(0.5, " ms"),
        "python_cold_save_and_run_p50_ms": Target(30, " ms"),
        "python_rss_per_workspace_mib": Target(5, " MiB"),
    }
)


def scaling_target(pool: int) -> Target:
    """CPU-bound throughput scales with cores: 4 workspaces at once do ≥ 90% of min(pool, cores) × one."""
    cores = min(pool, len(os.sched_getaffinity(0)))
    return Target(round(0.9 * cores, 2), "×", at_least=True)


@contextmanager
def python_service(procs: Processes, logs: Path, name: str, pool: int) -> Iterator[Server]:
    storage = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=logs))
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(storage / "functions"),
        "PYTHON_PACKAGES_DIR": str(storage / "packages"),  # none: the repo's data/ folder stays out of it
        "KERNEL_POOL_SIZE": str(pool),
        # The Python runtime reuses the Node eviction settings (docs/python.md): nothing is evicted.
        "FUNCTIONS_WORKERS_MAX_LRU": "1000",
        "INACTIVE_NODE_WORKER_DELETION_TIMEOUT": "3600",
    }
    command = [str(Path(sys.executable).with_name("functions")), "serve"]
    with served(procs, command, env, port, logs / f"{name}.log", node_host=True) as server:
        adopt_kernels(procs, server)
        try:
            yield server
        finally:
            adopt_kernels(procs, server)  # kernels booted since (spares) are stopped too if the service hangs


def adopt_kernels(procs: Processes, server: Server) -> None:
    # Each kernel runs in a session of its own (adapters/hosts/process.py): its pid is its group.
    for pid in kernel_pids(server.pid):
        procs.adopt(server.pid, pid)


def python_workers(connection: Connection) -> int:
    health = expect(connection.request("GET", "/sys/healthcheck"), "healthcheck").json()
    workers: int = health["runtimes"]["python"]["workers"]
    return workers


# -- warm `hello` ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Warm:
    sequential: Latency
    bare_sequential: Latency | None
    kernel_run_ms: float  # Server-Timing `run` (the call inside the subinterpreter), median
    kernel_queue_ms: float  # Server-Timing `queue` (kernel received → run started), median
    concurrent: Throughput
    cpu_us_service: float  # per request under load: the service process
    cpu_us_kernels: float  # per request under load: all its kernel processes together
    kernels: int


def server_timing(port: int, runs: int) -> tuple[float, float]:
    """Medians of the `run` and `queue` Server-Timing entries of warm runs: the kernel's share of a run."""
    connection = Connection(port)
    run, queue = [], []
    try:
        for _ in range(runs):
            answer = expect(connection.request("POST", RUN_PATH, RUN_BODY), "warm run")
            entries = dict(part.strip().split(";dur=") for part in answer.headers["server-timing"].split(","))
            run.append(float(entries["run"]))
            queue.append(float(entries["queue"]))
    finally:
        connection.close()
    return statistics.median(run), statistics.median(queue)


def measure_warm(server: Server, bare_sequential: Latency | None, args: argparse.Namespace) -> Warm:
    progress(f"  sequential: {args.warmup} warm-up + {args.runs} runs on one connection")
    sequential = sequential_latency(server.port, RUN_PATH, RUN_BODY, args.warmup, args.runs)
    run_ms, queue_ms = server_timing(server.port, 500)
    progress(f"  concurrent: {args.connections} connections for {args.seconds:g} s")
    kernels = kernel_pids(server.pid)
    service_before, kernels_before = cpu_seconds([server.pid]), cpu_seconds(kernels)
    concurrent = concurrent_load(server.port, RUN_PATH, RUN_BODY, args.connections, args.seconds)
    requests = max(concurrent.requests, 1)
    service_us = (cpu_seconds([server.pid]) - service_before) / requests * 1e6
    kernels_us = (cpu_seconds(kernels) - kernels_before) / requests * 1e6
    return Warm(
        sequential, bare_sequential, run_ms, queue_ms, concurrent, service_us, kernels_us, len(kernels)
    )


# -- memory ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RssPoint:
    workspaces: int
    workers_reported: int  # python workers per /sys/healthcheck: checks nothing was evicted
    service_kib: int
    kernels_kib: list[int]  # each kernel process (the pool and the booted spare kernel)


def measure_rss(server: Server, checkpoints: list[int]) -> list[RssPoint]:
    connection = Connection(server.port)
    points, saved = [], 0
    try:
        for target in checkpoints:
            progress(f"  filling up to {target} python workspaces")
            for i in range(saved, target):
                save_and_run(connection, f"rss-{i}", HELLO)
            saved = target
            time.sleep(1.0)  # let each kernel boot its next spare interpreter before reading RSS
            kernels = [rss_kib(pid) for pid in kernel_pids(server.pid)]
            points.append(RssPoint(target, python_workers(connection), rss_kib(server.pid), kernels))
    finally:
        connection.close()
    return points


def per_workspace_kib(points: list[RssPoint]) -> float:
    low, high = points[-2], points[-1]
    return (sum(high.kernels_kib) - sum(low.kernels_kib)) / (high.workspaces - low.workspaces)


# -- CPU-bound ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuRound:
    workspaces: int
    runs: int
    wall_s: float
    runs_per_s: float
    run_latency: Latency  # each run's own round trip
    kernel_run_ms: float  # median `duration` of the answers: the run inside its subinterpreter
    kernel_cpu_s: list[float]  # CPU each kernel process used during the round


def burn_runs(
    port: int, workspace: str, runs: int, samples: list[int], durations: list[float], errors: list[str]
) -> None:
    connection = Connection(port)
    try:
        for _ in range(runs):
            start = time.perf_counter_ns()
            answer = connection.request("POST", f"/v2/functions/{workspace}/run/burn", {})
            samples.append(time.perf_counter_ns() - start)
            if answer.status != 200 or answer.json().get("result") != BURN_RESULT:
                errors.append(f"{workspace}: HTTP {answer.status} {answer.body[:300]!r}")
            else:
                durations.append(float(answer.json()["duration"]))
    except Exception as exc:  # reported by the caller, on the main thread
        errors.append(f"{workspace}: {exc!r}")
    finally:
        connection.close()


def cpu_round(server: Server, workspaces: list[str], runs_each: int) -> CpuRound:
    """One client thread per workspace, each sending `runs_each` runs one after the other, all at once."""
    samples: list[int] = []
    durations: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=burn_runs, args=(server.port, ws, runs_each, samples, durations, errors))
        for ws in workspaces
    ]
    kernels = kernel_pids(server.pid)
    cpu_before = [cpu_seconds([pid]) for pid in kernels]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"CPU-bound runs failed: {errors[:3]}")
    kernel_cpu = [cpu_seconds([pid]) - before for pid, before in zip(kernels, cpu_before, strict=True)]
    runs = len(samples)
    latency = latency_of(samples, 0)
    return CpuRound(
        len(workspaces), runs, wall, runs / wall, latency, statistics.median(durations), kernel_cpu
    )


@dataclass(frozen=True)
class CpuBound:
    in_process_ms: float  # the same loop in this (bench) process's main interpreter, best of 3
    one: CpuRound
    four: CpuRound

    @property
    def ratio(self) -> float:
        return self.four.runs_per_s / self.one.runs_per_s


def in_process_ms() -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        sum(i * i for i in range(10**6))
        best = min(best, time.perf_counter() - start)
    return best * 1000


def measure_cpu_bound(server: Server, runs_each: int) -> CpuBound:
    names = ["burn-solo", "burn-a", "burn-b", "burn-c", "burn-d"]
    connection = Connection(server.port)
    try:
        for name in names:  # saved, loaded and run once: the rounds below time warm runs only
            expect(connection.request("POST", f"/v2/functions/{name}", BURN), f"save {name}")
            expect(connection.request("POST", f"/v2/functions/{name}/run/burn", {}), f"first run of {name}")
    finally:
        connection.close()
    progress(f"  CPU-bound: {runs_each} runs on 1 workspace")
    one = cpu_round(server, names[:1], runs_each)
    progress(f"  CPU-bound: {runs_each} runs on each of 4 workspaces at once")
    four = cpu_round(server, names[1:], runs_each)
    return CpuBound(in_process_ms(), one, four)


# -- the whole run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    machine: dict[str, str]
    pool: int
    warm: Warm
    cold: Cold
    cpu: CpuBound
    rss: list[RssPoint]
    rss_per_workspace_kib: float
    log_problems: dict[str, list[str]]


def measure_all(args: argparse.Namespace, procs: Processes, logs: Path, info: dict[str, str]) -> Figures:
    bare_sequential = None
    if not args.no_bare:
        progress("bare Starlette + Hypercorn app (the HTTP floor)")
        with bare(procs, logs) as server:
            bare_sequential = sequential_latency(server.port, RUN_PATH, RUN_BODY, args.warmup, args.runs)
    progress(f"service, KERNEL_POOL_SIZE={args.pool}")
    with python_service(procs, logs, "python", args.pool) as server:
        once(server.port, lambda connection: save_and_run(connection, "bench", HELLO))
        warm = measure_warm(server, bare_sequential, args)
        progress(f"  cold start: {args.cold} new workspaces, {args.cold_pause:g} s apart")
        cold = measure_cold(server.port, args.cold, args.cold_pause, "cold", HELLO)
        cpu = measure_cpu_bound(server, args.cpu_runs)
    progress("service, fresh, for memory")
    with python_service(procs, logs, "python-rss", args.pool) as server:
        rss = measure_rss(server, args.rss_workspaces)
    names = ["python", "python-rss", *([] if args.no_bare else ["bare"])]
    problems = {name: log_problems(logs / f"{name}.log") for name in names}
    return Figures(info, args.pool, warm, cold, cpu, rss, per_workspace_kib(rss), problems)


def warm_rows(f: Figures, args: argparse.Namespace) -> list[Row]:
    s, w = f.warm.sequential, f.warm
    rows = [
        judged(f"sequential p50 ({s.runs:,} runs)", s.p50_ms, "python_sequential_p50_ms"),
        Row("sequential p99 / mean / max", f"{s.p99_ms:.3f} / {s.mean_ms:.3f} / {s.max_ms:.3f} ms"),
    ]
    if w.bare_sequential is not None:
        b = w.bare_sequential
        rows.append(Row("bare Starlette app, sequential p50 / p99", f"{b.p50_ms:.3f} / {b.p99_ms:.3f} ms"))
    c = w.concurrent
    return rows + [
        Row(
            "Server-Timing median: run in the subinterpreter / kernel queue",
            f"{w.kernel_run_ms:.3f} / {w.kernel_queue_ms:.3f} ms",
        ),
        Row(f"{c.connections} connections, {c.seconds:.0f} s ({c.client}): runs/s", f"{c.runs_per_s:,.0f}"),
        Row(f"{c.connections} connections: p50 / p99", f"{c.p50_ms:.2f} / {c.p99_ms:.2f} ms"),
        Row(
            f"server CPU per request under load: service + {w.kernels} kernels",
            f"{w.cpu_us_service + w.cpu_us_kernels:.0f} µs "
            f"({w.cpu_us_service:.0f} service + {w.cpu_us_kernels:.0f} kernels)",
        ),
        Row(
            "non-200 answers: sequential / concurrent",
            f"{s.errors} of {s.runs:,} / {c.errors} of {c.requests:,}",
        ),
        Row("keep-alive closed by server (sequential)", f"{s.reconnects} times"),
    ]


def cpu_rows(f: Figures) -> list[Row]:
    cpu = f.cpu
    rows = [Row("the loop alone, in the bench's own interpreter (best of 3)", f"{cpu.in_process_ms:.1f} ms")]
    for r in (cpu.one, cpu.four):
        label = f"{r.workspaces} workspace{'s' if r.workspaces > 1 else ''}, {r.runs} runs"
        rows.append(Row(f"{label}: runs/s", f"{r.runs_per_s:.2f} ({r.wall_s:.2f} s)"))
        rows.append(
            Row(
                f"{label}: each run p50 / max (its `duration` p50)",
                f"{r.run_latency.p50_ms:.0f} / {r.run_latency.max_ms:.0f} ms ({r.kernel_run_ms:.0f} ms)",
            )
        )
        busy = " + ".join(f"{s:.2f}" for s in r.kernel_cpu_s)
        rows.append(Row(f"{label}: CPU s of each kernel (pool + spare)", busy))
    target = scaling_target(f.pool)
    rows.append(judged_by("throughput 4 workspaces / 1 workspace", cpu.ratio, target, ".2f"))
    return rows


def rss_rows(f: Figures) -> list[Row]:
    rows = [
        Row(
            f"{p.workspaces} resident (python workers: {p.workers_reported})",
            f"kernels {sum(p.kernels_kib) / 1024:.1f} MiB "
            f"({' + '.join(f'{k / 1024:.1f}' for k in p.kernels_kib)}), "
            f"service {p.service_kib / 1024:.1f} MiB",
        )
        for p in f.rss
    ]
    span = f"{f.rss[-2].workspaces}→{f.rss[-1].workspaces}"
    per = f.rss_per_workspace_kib / 1024
    rows.append(
        judged_by(f"per resident workspace ({span})", per, TARGETS["python_rss_per_workspace_mib"], ".2f")
    )
    return rows


def report(f: Figures, args: argparse.Namespace) -> str:
    parts = [
        table(f"Warm python `hello` over HTTP (KERNEL_POOL_SIZE={f.pool})", warm_rows(f, args)),
        table(
            f"Cold start: save + first run of {args.cold} new python workspaces over HTTP",
            cold_rows(f.cold, "python_cold_save_and_run_p50_ms"),
        ),
        table(
            f"CPU-bound `sum(i*i for i in range(10**6))`, 1 vs 4 workspaces (KERNEL_POOL_SIZE={f.pool})",
            cpu_rows(f),
        ),
        table("Memory (VmRSS of the kernel processes, a fresh service)", rss_rows(f)),
    ]
    for name, lines in f.log_problems.items():
        if lines:
            parts.append(
                f"\n{len(lines)} warning/error lines in the {name} log; first ones:\n" + "\n".join(lines[:5])
            )
    return "\n".join(parts)


def as_json(f: Figures) -> dict[str, Any]:
    checked = {
        "python_sequential_p50_ms": (f.warm.sequential.p50_ms, TARGETS["python_sequential_p50_ms"]),
        "python_cold_save_and_run_p50_ms": (
            f.cold.save_and_run.p50_ms,
            TARGETS["python_cold_save_and_run_p50_ms"],
        ),
        "python_rss_per_workspace_mib": (
            f.rss_per_workspace_kib / 1024,
            TARGETS["python_rss_per_workspace_mib"],
        ),
        "python_cpu_scaling": (f.cpu.ratio, scaling_target(f.pool)),
    }
    targets = {
        key: {"value": value, "target": target.describe(), "pass": target.met_by(value)}
        for key, (value, target) in checked.items()
    }
    return {**asdict(f), "targets": targets}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON")
    cli.add_argument("--pool", type=int, default=2, help="KERNEL_POOL_SIZE of the service (default 2)")
    cli.add_argument("--runs", type=int, default=2000, help="measured sequential runs (default 2000)")
    cli.add_argument("--warmup", type=int, default=200, help="sequential warm-up runs (default 200)")
    cli.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    cli.add_argument("--seconds", type=float, default=10.0, help="concurrent test length (default 10)")
    cli.add_argument("--cold", type=int, default=20, help="new workspaces for cold start (default 20)")
    cli.add_argument("--cold-pause", type=float, default=0.2, help="idle seconds before each (default 0.2)")
    cli.add_argument("--cpu-runs", type=int, default=8, help="CPU-bound runs per workspace (default 8)")
    cli.add_argument(
        "--rss-workspaces",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[10, 100],
        help="resident workspace counts at which RSS is read; the last two give the increment "
        "(default 10,100)",
    )
    cli.add_argument("--no-bare", action="store_true", help="skip the bare app's sequential p50 (the floor)")
    return cli.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    info = machine()
    print(machine_text(info), flush=True)
    try:
        # Processes exits first: the servers are stopped before their storage and logs are removed.
        with tempfile.TemporaryDirectory(prefix="functions-pybench-") as tmp, Processes() as procs:
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
