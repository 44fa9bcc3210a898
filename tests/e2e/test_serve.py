"""`functions serve` as a user starts it: a real process, Hypercorn, the real container."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVE = "from entrypoints.cli import main; raise SystemExit(main(['serve']))"


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


def test_serve_answers_on_host_and_port_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(tmp_path / "functions"),
    }
    server = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stderr=subprocess.PIPE, text=True)
    try:
        workspaces = get_json(f"http://127.0.0.1:{port}/v2/functions", time.monotonic() + 15)
        assert workspaces == {"workspaces": []}
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
    assert server.returncode == 0, err
    assert "Traceback" not in err
