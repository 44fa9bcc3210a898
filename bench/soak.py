"""Soak: many clients for a while on workspaces of both languages, runs and saves mixed, nothing lost.

Starts its own `functions serve` (temporary storage), saves the workspaces (half nodejs, half python),
then `--clients` closed-loop clients, each on its own keep-alive connection, send for `--seconds`:
a save of a random workspace with probability `--save-share`, else a run of one. Every save carries a
new version number, which the workspace's function returns, so the figures can say:

- requests, answers by status and error type, and how many were unexpected (any answer but a 200:
  every request is valid and no runtime is harmed, so a 4xx or 5xx is a fault of the service);
- p50/p99 latency of runs and of saves;
- stale runs: a run sent after a save of its workspace was acknowledged that still ran an older
  version (SPEC: after a save returns, every run executes the new code);
- lost saves: at the end, a workspace whose body (GET) or run is not its last acknowledged save.

Saves of one workspace are sent one at a time (a per-workspace lock in the client), so "the last
acknowledged save" is well defined; saves of different workspaces and all runs overlap freely.

    .venv/bin/python bench/soak.py [--clients 200] [--seconds 60] [--workspaces 50] [--json PATH]
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_http import HEAD_END, Connection, body_length, build_request, parse_head
from bench_load import percentile
from bench_procs import Processes, free_port, kernel_pids, machine, node_host_pid, wait_healthy

LANGUAGES = ("nodejs", "python")
REQUEST_TIMEOUT_S = 60.0  # past the 20 s run timeout: a request still unanswered then is a hung service


def workspace_body(language: str, version: int) -> dict[str, Any]:
    """A workspace whose `version` function answers its version, and a helper it calls."""
    if language == "nodejs":
        functions = {
            "version": {
                "code": f"return {{version: {version}, twice: await twice({{n: parameters.n ?? 1}})}};"
            },
            "twice": {"code": "return n * 2;", "parameters": {"n": {"type": "number"}}},
        }
    else:
        functions = {
            "version": {
                "code": f"return {{'version': {version}, 'twice': twice(n=parameters.get('n', 1))}}",
                "language": "python",
            },
            "twice": {"code": "return n * 2", "language": "python", "parameters": {"n": {"type": "number"}}},
        }
    return {"functions": functions, "note": f"version {version}"}


@dataclass
class Tally:
    """What all clients saw."""

    run_ms: list[float] = field(default_factory=list)
    save_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # "200", "503 Unavailable", "connection error"
    samples: dict[str, str] = field(default_factory=dict)  # one message of each kind of error
    stale_runs: int = 0


@dataclass
class Workspace:
    name: str
    language: str
    sent: int = 0  # the last version sent
    acknowledged: int = 0  # the last version whose save answered 200
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, payload: Any) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                writer.write(build_request(method, path, self.port, payload))
                status, headers = parse_head((await reader.readuntil(HEAD_END))[: -len(HEAD_END)])
                body = await reader.readexactly(body_length(headers))
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


def count(tally: Tally, what: str, status: int, body: bytes) -> None:
    """Count an answer by status and error type; keep the first message of each kind of error."""
    if status == 200:
        tally.answers["200"] += 1
        return
    try:
        error = json.loads(body)["error"]
        kind, message = f"{status} {error['type']}", str(error["message"])
    except (ValueError, KeyError, TypeError):
        kind, message = f"{status} (not an error body)", body[:300].decode(errors="replace")
    tally.answers[kind] += 1
    tally.samples.setdefault(kind, f"{what}: {message[:300]}")


async def one_client(
    port: int, workspaces: list[Workspace], save_share: float, deadline: float, tally: Tally, seed: int
) -> None:
    chance = random.Random(seed)
    client = Client(port)
    try:
        while time.perf_counter() < deadline:
            workspace = chance.choice(workspaces)
            try:
                if chance.random() < save_share:
                    await save(client, workspace, tally)
                else:
                    await run(client, workspace, tally, chance.randint(1, 100))
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                kind = f"connection error ({type(exc).__name__})"
                tally.answers[kind] += 1
                tally.samples.setdefault(kind, repr(exc)[:300])
    finally:
        client.close()


async def save(client: Client, workspace: Workspace, tally: Tally) -> None:
    async with workspace.lock:  # one save of a workspace at a time: "the last acknowledged" is defined
        workspace.sent += 1
        version = workspace.sent
        started = time.perf_counter()
        status, body = await client.request(
            "POST", f"/v2/functions/{workspace.name}", workspace_body(workspace.language, version)
        )
        tally.save_ms.append((time.perf_counter() - started) * 1000)
        count(tally, "save", status, body)
        if status == 200:
            workspace.acknowledged = version


async def run(client: Client, workspace: Workspace, tally: Tally, n: int) -> None:
    acknowledged = workspace.acknowledged  # what the run must see at least
    started = time.perf_counter()
    status, body = await client.request(
        "POST", f"/v2/functions/{workspace.name}/run/version", {"parameters": {"n": n}}
    )
    tally.run_ms.append((time.perf_counter() - started) * 1000)
    count(tally, f"run of a {workspace.language} workspace", status, body)
    if status == 200:
        result = json.loads(body)["result"]
        if result["twice"] != 2 * n:
            tally.answers["200 with a wrong result"] += 1
        if result["version"] < acknowledged:
            tally.stale_runs += 1


def lost_saves(port: int, workspaces: list[Workspace]) -> list[str]:
    """The workspaces whose stored body or running code is not their last acknowledged save."""
    lost = []
    connection = Connection(port)
    try:
        for workspace in workspaces:
            expected = workspace_body(workspace.language, workspace.acknowledged)
            got = connection.request("GET", f"/v2/functions/{workspace.name}")
            ran = connection.request("POST", f"/v2/functions/{workspace.name}/run/version", {})
            if (
                got.json() != expected
                or ran.json().get("result", {}).get("version") != workspace.acknowledged
            ):
                lost.append(workspace.name)
    finally:
        connection.close()
    return lost


@dataclass(frozen=True)
class Report:
    clients: int
    seconds: float
    workspaces: int
    save_share: float
    requests: int
    requests_per_s: float
    answers: dict[str, int]
    samples: dict[str, str]
    unexpected: int
    runs: int
    run_p50_ms: float
    run_p99_ms: float
    saves: int
    save_p50_ms: float
    save_p99_ms: float
    stale_runs: int
    lost_saves: list[str]
    service_log_errors: int
    service_log: str
    machine: dict[str, str]


async def load(port: int, workspaces: list[Workspace], args: argparse.Namespace) -> tuple[Tally, float]:
    tally = Tally()
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(
        *(
            one_client(port, workspaces, args.save_share, deadline, tally, seed)
            for seed in range(args.clients)
        )
    )
    return tally, time.perf_counter() - started


def soak(args: argparse.Namespace) -> Report:
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(folder / "storage"),
    }
    log = folder / "service.log"
    command = [str(Path(sys.executable).with_name("functions")), "serve"]
    with Processes() as procs:
        with log.open("wb") as out:
            popen = procs.start(command, env, out)
        wait_healthy(port, popen, log)
        for pid in [node_host_pid(popen.pid), *kernel_pids(popen.pid)]:  # in sessions of their own
            procs.adopt(popen, pid)
        languages = args.languages.split(",")
        workspaces = [Workspace(f"soak-{i}", languages[i % len(languages)]) for i in range(args.workspaces)]
        connection = Connection(port)
        for workspace in workspaces:  # version 0 of each, and one run: every runtime is warm
            connection.request(
                "POST", f"/v2/functions/{workspace.name}", workspace_body(workspace.language, 0)
            )
            connection.request("POST", f"/v2/functions/{workspace.name}/run/version", {})
        connection.close()
        tally, elapsed = asyncio.run(load(port, workspaces, args))
        lost = lost_saves(port, workspaces)
    requests = sum(tally.answers.values())
    runs, saves = sorted(tally.run_ms), sorted(tally.save_ms)
    log_errors = sum('"level": "error"' in line for line in log.read_text(errors="replace").splitlines())
    return Report(
        clients=args.clients,
        seconds=round(elapsed, 1),
        workspaces=args.workspaces,
        save_share=args.save_share,
        requests=requests,
        requests_per_s=round(requests / elapsed, 1),
        answers=dict(tally.answers.most_common()),
        samples=tally.samples,
        unexpected=requests - tally.answers["200"] + tally.answers["200 with a wrong result"],
        runs=len(runs),
        run_p50_ms=round(percentile(runs, 0.5), 2) if runs else 0.0,
        run_p99_ms=round(percentile(runs, 0.99), 2) if runs else 0.0,
        saves=len(saves),
        save_p50_ms=round(percentile(saves, 0.5), 2) if saves else 0.0,
        save_p99_ms=round(percentile(saves, 0.99), 2) if saves else 0.0,
        stale_runs=tally.stale_runs,
        lost_saves=lost,
        service_log_errors=log_errors,
        service_log=str(log),
        machine=machine(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workspaces", type=int, default=50, help="shared out among the languages")
    parser.add_argument("--languages", default=",".join(LANGUAGES), help="comma-separated: nodejs,python")
    parser.add_argument("--save-share", type=float, default=0.2, help="the share of requests that are saves")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    # `timeout` or a Ctrl-C elsewhere: unwind, so Processes stops the service and its hosts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = soak(args)
    print(f"{report.clients} clients, {report.seconds} s, {report.workspaces} workspaces ({args.languages})")
    print(f"requests: {report.requests} ({report.requests_per_s}/s)")
    for kind, number in report.answers.items():
        sample = report.samples.get(kind)
        print(f"  {kind}: {number}" + (f"  (e.g. {sample})" if sample else ""))
    print(f"unexpected: {report.unexpected}")
    print(f"runs: {report.runs}, p50 {report.run_p50_ms} ms, p99 {report.run_p99_ms} ms")
    print(f"saves: {report.saves}, p50 {report.save_p50_ms} ms, p99 {report.save_p99_ms} ms")
    print(f"stale runs: {report.stale_runs}")
    print(f"lost saves: {len(report.lost_saves)} {report.lost_saves or ''}".rstrip())
    print(f"error lines in the service log: {report.service_log_errors} ({report.service_log})")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    ok = report.unexpected == 0 and not report.lost_saves and report.stale_runs == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
