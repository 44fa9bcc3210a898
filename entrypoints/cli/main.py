"""The `functions` command: serve the HTTP API, and manage workspaces on a service or the local storage.

Commands that take `--url` talk to a running service (with FUNCTIONS_API_KEY as the bearer key);
without it they build the service in-process on FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH. Results go to
stdout, logs and progress to stderr; the exit status is 0 on success, 1 when the service or the
function answered an error (named on stderr), 2 for a usage or settings error.
"""

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dependency_injector import providers
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from starlette.applications import Starlette

from adapters.python.interpreter import KernelPythonError, choose_kernel_python
from adapters.python.packages import PackageInstallError, install_packages
from application.workspaces import CURRENT, REGENERATED
from entrypoints.cli.client import CommandError, Target, Unreachable, open_target
from entrypoints.cli.deploy import DeployError, changes, read_folder
from entrypoints.cli.history import JOBS as HISTORY_JOBS
from entrypoints.cli.history import add_commands as add_history_commands
from entrypoints.cli.history import run_async
from entrypoints.container import Container, build_container, generator_version
from entrypoints.embed import open_service
from entrypoints.http.app import create_app
from entrypoints.http.logs import configure_logging
from entrypoints.http.python_api import create_python_api
from entrypoints.settings import Settings, SettingsError, load_settings

Job = Callable[[Target], Awaitable[int]]
T = TypeVar("T")


class InputError(Exception):
    """A command's input is not usable (exit status 2, like argparse's own errors)."""


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="functions",
        description="Store workspaces of small JavaScript and Python functions and run them over HTTP.",
        epilog="All configuration comes from environment variables (PORT, HOST, ...); see the README.",
    )
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="serve the HTTP API on HOST:PORT until SIGINT or SIGTERM")
    commands.add_parser("migrate", help="regenerate every stored workspace's scripts once, then exit")
    commands.add_parser(
        "python-api", help="serve only the Python runtime on HOST:PYTHON_API_PORT, for PYTHON_API_URL"
    )
    deploy = _with_url(
        commands.add_parser("deploy", help="save a folder of *.js and *.py files as a workspace")
    )
    deploy.add_argument("folder", type=Path, metavar="DIR")
    deploy.add_argument("--workspace", metavar="ID", help="the workspace id (default: the folder's name)")
    run = _with_url(commands.add_parser("run", help="run a function: result on stdout, logs on stderr"))
    run.add_argument("workspace")
    run.add_argument("function")
    run.add_argument(
        "-p",
        dest="params",
        action="append",
        default=[],
        type=_param,
        metavar="NAME=VALUE",
        help="a parameter; VALUE is read as JSON when it is JSON (3, true, [1]), else as text",
    )
    run.add_argument("--json", metavar="BODY", help='the run body, e.g. \'{"parameters": {"n": 3}}\'')
    run.add_argument("--async", dest="is_async", action="store_true", help="queue it; print the run's id")
    _with_url(commands.add_parser("list", help="list the workspace ids"))
    _with_url(commands.add_parser("get", help="print a workspace's body")).add_argument("workspace")
    _with_url(commands.add_parser("delete", help="delete a workspace")).add_argument("workspace")
    add_history_commands(commands, _with_url)
    return cli


def _with_url(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    command.add_argument(
        "--url", help="a running service (e.g. http://127.0.0.1:4000); default: the local storage"
    )
    return command


def _param(text: str) -> tuple[str, Any]:
    name, equals, raw = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in SERVERS:
        return SERVERS[args.command]()
    try:
        settings = load_settings()
    except SettingsError as exc:  # a message naming the variable is all the user needs; no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The service's own info lines (access log, start-up) would bury a command's output.
    configure_logging("debug" if settings.log_level == "debug" else "warning", settings.log_format)
    try:
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
        return asyncio.run(_against_target(JOBS[args.command](args), args.url, settings))
    except (CommandError, Unreachable, DeployError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _against_target(job: Job, url: str | None, settings: Settings) -> int:
    async with open_target(url, settings) as target:
        return await job(target)


# -- serve and migrate ---------------------------------------------------------------------------


def serve() -> int:
    container = server_container(embedded_python=False)
    if isinstance(container, int):
        return container
    settings: Settings = container.settings()
    asyncio.run(serve_until_signalled(create_app(container), hypercorn_config(settings)))
    return 0


def python_api() -> int:
    """Serve the embedded Python runtime alone (SPEC §7): a main service reaches it with PYTHON_API_URL."""
    container = server_container(embedded_python=True)
    if isinstance(container, int):
        return container
    settings: Settings = container.settings()
    app = create_python_api(
        container.local_python(),  # always the embedded one, whatever PYTHON_API_URL says
        api_key=settings.api_key,
        max_body=4 * settings.request_max_size,  # a run may carry a whole workspace body and parameters
    )
    asyncio.run(serve_until_signalled(app, hypercorn_config(settings, settings.python_api_port)))
    return 0


def server_container(embedded_python: bool) -> Container | int:
    """What both servers do before serving: settings, logging, PYTHON_PACKAGES_AUTO_INSTALL. When they
    cannot start: the exit status (2 a bad setting, 1 a failed install), after one `error:` line."""
    try:
        container = build_container()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings: Settings = container.settings()
    configure_logging(settings.log_level, settings.log_format)
    python_here = embedded_python or not settings.python_api_url
    if python_here:
        try:  # PYTHON_KERNEL_BINARY unusable: one line, not a traceback when the runtime is built
            choose_kernel_python(settings.python_kernel_binary)
        except KernelPythonError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not install_python_packages(settings):
            return 1
    return container


def install_python_packages(settings: Settings) -> bool:
    """PYTHON_PACKAGES_AUTO_INSTALL before the server starts, so a failure is one clear message (pip's
    own words), not a lifespan traceback. The runtime's start then finds them in place."""
    if not settings.python_packages_auto_install:
        return True
    requirements = settings.python_packages_auto_install
    kernel_python = choose_kernel_python(settings.python_kernel_binary).binary  # its wheels, its version
    try:
        asyncio.run(install_packages(kernel_python, settings.python_packages_dir, requirements))
    except PackageInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


def hypercorn_config(settings: Settings, port: int | None = None) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 address
    config.bind = [f"{host}:{settings.port if port is None else port}"]
    config.accesslog = None  # ours (entrypoints/http/middleware.py) carries the request id and the outcome
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handler and format, not its own
    return config


async def serve_until_signalled(app: Starlette, config: Config) -> None:
    """Serve until SIGINT or SIGTERM; then refuse new runs, let those in flight finish (for
    SHUTDOWN_GRACE_PERIOD), and only then stop serving, so the lifespan can close the runtimes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def drained() -> None:
        await stop.wait()
        service = getattr(app.state, "service", None)
        if service is not None:
            await service.stop()

    asgi: Callable[..., Awaitable[None]] = app  # Starlette types ASGI more loosely than Hypercorn
    await hypercorn_serve(asgi, config, shutdown_trigger=drained)


async def migrate(settings: Settings) -> int:
    """Regenerate every workspace's scripts from its workspace.yaml (UPDATE_SCRIPTS_ON_STARTUP, once)."""
    async with open_service(container=Container(settings=providers.Object(settings))) as service:
        report = await service.workspaces.regenerate_all(generator_version())
    failed = {workspace_id for workspace_id, why in report.items() if why not in (REGENERATED, CURRENT)}
    for workspace_id in sorted(report):
        print(f"{workspace_id}: {report[workspace_id]}")
    done = sum(why == REGENERATED for why in report.values())
    print(f"regenerated {done} of {len(report)} workspaces", file=sys.stderr)
    return 1 if failed else 0


# -- the commands that take --url ----------------------------------------------------------------


def deploy(args: argparse.Namespace) -> Job:
    body = read_folder(args.folder)  # before reaching the service: a bad folder fails at once
    workspace_id = args.workspace or args.folder.resolve().name
    functions = ", ".join(body["functions"])
    print(f"read {args.folder}: {len(body['functions'])} functions ({functions})", file=sys.stderr)

    async def job(target: Target) -> int:
        previous = await _previous(target, workspace_id)
        print(f"saving workspace {workspace_id!r} to {target.where}", file=sys.stderr)
        saved = await _with_progress(
            "saving (dependencies install during a save)", target.save(workspace_id, body)
        )
        lines = changes(previous, saved) or ["no changes"]
        print(f"saved workspace {workspace_id!r}:")
        print("\n".join(f"  {line}" for line in lines))
        return 0

    return job


async def _previous(target: Target, workspace_id: str) -> Any:
    try:
        return await target.get(workspace_id)
    except CommandError as exc:
        if exc.status == 404:
            return None
        raise


async def _with_progress(what: str, work: Awaitable[T]) -> T:
    """`work`'s result; meanwhile a line on stderr every second, so a long save does not look hung."""

    async def tick() -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            print(f"  ... {what}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    ticker = asyncio.create_task(tick())
    try:
        return await work
    finally:
        ticker.cancel()


def run(args: argparse.Namespace) -> Job:
    body = _run_body(args.json)
    body["parameters"].update(args.params)

    async def job(target: Target) -> int:
        if args.is_async:
            return await run_async(target, args.workspace, args.function, body)
        status, answer = await target.run(args.workspace, args.function, body)
        for entry in answer.get("logs") or ():
            print(f"[{entry.get('level')}] {entry.get('message')}", file=sys.stderr)
        if status < 400:
            print(json.dumps(answer.get("result"), indent=2, ensure_ascii=False))
            return 0
        error = CommandError(status, answer)
        print(f"error: {error}", file=sys.stderr)
        if stack := error.body["error"].get("stack"):
            print(stack, file=sys.stderr)
        return 1

    return job


def _run_body(text: str | None) -> dict[str, Any]:
    try:
        body = json.loads(text) if text is not None else {}
    except ValueError as exc:
        raise InputError(f"--json is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.setdefault("parameters", {}), dict):
        raise InputError('--json must be an object such as {"parameters": {"name": "world"}}')
    return body


def list_(args: argparse.Namespace) -> Job:
    async def job(target: Target) -> int:
        for workspace_id in await target.list():
            print(workspace_id)
        return 0

    return job


def get(args: argparse.Namespace) -> Job:
    async def job(target: Target) -> int:
        print(json.dumps(await target.get(args.workspace), indent=2, ensure_ascii=False))
        return 0

    return job


def delete(args: argparse.Namespace) -> Job:
    async def job(target: Target) -> int:
        await target.delete(args.workspace)
        print(f"deleted workspace {args.workspace!r}", file=sys.stderr)
        return 0

    return job


SERVERS: dict[str, Callable[[], int]] = {"serve": serve, "python-api": python_api}
JOBS: dict[str, Callable[[argparse.Namespace], Job]] = {
    "deploy": deploy,
    "run": run,
    "list": list_,
    "get": get,
    "delete": delete,
    **HISTORY_JOBS,
}
