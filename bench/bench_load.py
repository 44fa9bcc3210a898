"""The two load shapes: sequential runs on one connection, and a closed loop of N connections."""

import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_http import Connection, build_request, closed_loop_load

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank: the value below which `fraction` of the samples fall."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass(frozen=True)
class Latency:
    runs: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    reconnects: int  # times the server closed the keep-alive connection during the measured runs


def latency_of(samples_ns: list[int], errors: int, reconnects: int = 0) -> Latency:
    values = sorted(ns / 1e6 for ns in samples_ns)
    mean = sum(values) / len(values)
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    return Latency(len(values), p50, p99, mean, values[-1], errors, reconnects)


def sequential_latency(port: int, path: str, payload: Any, warmup: int, runs: int) -> Latency:
    """Runs one after the other on one keep-alive connection; only the request/answer is timed."""
    request = build_request("POST", path, port, payload)
    connection = Connection(port)
    try:
        for _ in range(warmup):
            connection.send(request)
        samples, errors = [], 0
        reconnects_before = connection.reconnects
        for _ in range(runs):
            connection.connect()  # a reconnect after Hypercorn's keep-alive limit is not a run's latency
            start = time.perf_counter_ns()
            answer = connection.send(request)
            samples.append(time.perf_counter_ns() - start)
            errors += answer.status != 200  # counted outside the timed span
        return latency_of(samples, errors, connection.reconnects - reconnects_before)
    finally:
        connection.close()


@dataclass(frozen=True)
class Throughput:
    client: str
    connections: int
    seconds: float
    requests: int
    runs_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int


def concurrent_load(port: int, path: str, payload: Any, connections: int, seconds: float) -> Throughput:
    if shutil.which("wrk"):
        return _wrk_load(port, path, payload, connections, seconds)
    return _python_load(port, path, payload, connections, seconds)


def _wrk_load(port: int, path: str, payload: Any, connections: int, seconds: float) -> Throughput:
    # One wrk thread: on a 2-core machine a second one only takes CPU away from the server under test.
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(WRK_SCRIPT)]
    env = {**os.environ, "BENCH_BODY": json.dumps(payload)}
    done = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    elapsed = figures["duration_us"] / 1e6
    return Throughput(
        client="wrk -t1",
        connections=connections,
        seconds=elapsed,
        requests=figures["requests"],
        runs_per_s=figures["requests"] / elapsed,
        p50_ms=figures["p50_us"] / 1e3,
        p99_ms=figures["p99_us"] / 1e3,
        mean_ms=figures["mean_us"] / 1e3,
        max_ms=figures["max_us"] / 1e3,
        errors=sum(figures["errors"].values()),
    )


def _python_load(port: int, path: str, payload: Any, connections: int, seconds: float) -> Throughput:
    request = build_request("POST", path, port, payload)
    started = time.perf_counter()
    tally = asyncio.run(closed_loop_load(port, request, connections, seconds))
    elapsed = time.perf_counter() - started
    latency = latency_of(tally.latencies_ns, tally.errors)
    return Throughput(
        client="python asyncio",
        connections=connections,
        seconds=elapsed,
        requests=latency.runs,
        runs_per_s=latency.runs / elapsed,
        p50_ms=latency.p50_ms,
        p99_ms=latency.p99_ms,
        mean_ms=latency.mean_ms,
        max_ms=latency.max_ms,
        errors=tally.errors,
    )
