"""`functions serve` as a user starts it: a real process, Hypercorn, the real container."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.serving import SERVE, free_port, get_json


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
