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


def test_a_failed_python_auto_install_stops_start_up_with_pip_s_words(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(tmp_path / "functions"),
        "PYTHON_PACKAGES_DIR": str(tmp_path / "packages"),
        "PYTHON_PACKAGES_AUTO_INSTALL": "no-such-package-here",
        "PIP_NO_INDEX": "1",  # pip's own setting: nothing is fetched, the install fails at once
    }
    server = subprocess.run(
        [sys.executable, "-c", SERVE], env=env, capture_output=True, text=True, timeout=120
    )
    assert server.returncode == 1
    assert server.stderr.startswith("error: PYTHON_PACKAGES_AUTO_INSTALL")
    assert "no-such-package-here" in server.stderr and "Traceback" not in server.stderr
