"""Start `functions serve` as a user would (a real process, Hypercorn, the real container) for a test."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVE = "from entrypoints.cli.main import main; raise SystemExit(main(['serve']))"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str, deadline: float) -> object:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return json.load(answer)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def serving(storage: Path, **environ: str) -> Iterator[str]:
    """A running service on a free port, storing under `storage`; yields its base URL, stops it after."""
    with serving_process(storage, **environ) as (url, _server):
        yield url


@contextmanager
def serving_process(storage: Path, **environ: str) -> Iterator[tuple[str, "subprocess.Popen[str]"]]:
    """As `serving`, also yielding the process (to signal it); it must end with status 0, no traceback."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(storage), **environ}
    # The log goes to a file: a pipe read only at the end fills up and blocks a chatty service.
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stderr=log, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            get_json(f"{url}/sys/healthcheck", time.monotonic() + 20)
            yield url, server
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
            log.seek(0)
            err = log.read()
    assert server.returncode == 0, err
    assert "Traceback" not in err, err
