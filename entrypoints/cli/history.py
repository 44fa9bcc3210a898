"""The history commands: `functions versions WS`, `restore WS N`, `runs WS [FN]` (and `run --async`)."""

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from entrypoints.cli.client import Target

Job = Callable[[Target], Awaitable[int]]
Adder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_commands(commands: Any, with_url: Adder) -> None:
    """The history's subcommands on `functions`' subparsers (each taking --url, as the others)."""
    versions = with_url(commands.add_parser("versions", help="list a workspace's saved versions"))
    versions.add_argument("workspace")
    restore = with_url(
        commands.add_parser("restore", help="save version N of a workspace again, as its newest version")
    )
    restore.add_argument("workspace")
    restore.add_argument("number", type=int, metavar="N")
    runs = with_url(commands.add_parser("runs", help="list a workspace's recorded runs, newest first"))
    runs.add_argument("workspace")
    runs.add_argument("function", nargs="?", help="only this function's runs")
    runs.add_argument("--status", help="only runs with this status, e.g. failed")
    runs.add_argument("--limit", type=int, default=20, help="how many (1-500; default 20)")
    runs.add_argument("--id", dest="run_id", help="print this one run as JSON")


def versions(args: argparse.Namespace) -> Job:
    async def job(target: Target) -> int:
        for version in await target.versions(args.workspace):
            current = "  (current)" if version["current"] else ""
            functions = ", ".join(version["functions"])
            print(f"{version['version']:>4}  {version['savedAt']}  {functions}{current}")
        return 0

    return job


def restore(args: argparse.Namespace) -> Job:
    async def job(target: Target) -> int:
        number, _ = await target.restore(args.workspace, args.number)
        print(f"restored version {args.number} of workspace {args.workspace!r} as version {number}")
        return 0

    return job


def runs(args: argparse.Namespace) -> Job:
    async def job(target: Target) -> int:
        if args.run_id:
            print(json.dumps(await target.get_run(args.workspace, args.run_id), indent=2, ensure_ascii=False))
            return 0
        filters = {"limit": str(args.limit)}
        filters.update({k: v for k, v in (("function", args.function), ("status", args.status)) if v})
        for run in await target.runs(args.workspace, filters):
            duration = "-" if run["duration"] is None else f"{run['duration']:.1f} ms"
            kind = "async" if run["async"] else "sync"
            started = run["startedAt"] or run["queuedAt"]
            print(f"{run['id']}  {started}  {run['function']}  {run['status']}  {duration}  {kind}")
        return 0

    return job


async def run_async(target: Target, workspace_id: str, function: str, body: dict[str, Any]) -> int:
    """`run --async`: a service queues it and the id is printed (read it with `runs WS --id ID`); the
    local storage runs it in this process, so the command waits for its outcome."""
    run = await target.run_async(workspace_id, function, body)
    print(json.dumps(run, indent=2, ensure_ascii=False))
    if run["status"] in ("queued", "running"):
        print(f"queued: functions runs {workspace_id} --id {run['id']}", file=sys.stderr)
        return 0
    return 0 if run["status"] == "succeeded" else 1


JOBS: dict[str, Callable[[argparse.Namespace], Job]] = {
    "versions": versions,
    "restore": restore,
    "runs": runs,
}
