"""The `functions` command: `functions serve` runs the HTTP service with Hypercorn."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from entrypoints.container import build_container
from entrypoints.http import create_app
from entrypoints.logs import configure_logging
from entrypoints.settings import Settings, SettingsError


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="functions",
        description="Store workspaces of small JavaScript and Python functions and run them over HTTP.",
        epilog="All configuration comes from environment variables (PORT, HOST, ...); see the README.",
    )
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="serve the HTTP API on HOST:PORT until SIGINT or SIGTERM")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return COMMANDS[args.command]()


def serve() -> int:
    try:
        container = build_container()
    except SettingsError as exc:  # a message naming the variable is all the user needs; no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings: Settings = container.settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve_until_signalled(create_app(container), hypercorn_config(settings)))
    return 0


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 address
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None  # one line per request costs more than a run on the hot path
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handler and format, not its own
    return config


async def serve_until_signalled(app: Callable[..., Awaitable[None]], config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then let the app's lifespan close the runtimes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait)


COMMANDS: dict[str, Callable[[], int]] = {"serve": serve}
