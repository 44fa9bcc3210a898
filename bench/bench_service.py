"""A real `functions serve` for a bench: a free port, a storage folder of its own, settings on top of the
environment; yields an HTTP client once it is ready, and stops it and removes its folder after."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_procs import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVE = "from entrypoints.cli.main import main; raise SystemExit(main(['serve']))"


@contextmanager
def serving(
    settings: Mapping[str, str], root: Path = ROOT, timeout_s: float = 60, ready_s: float = 60
) -> Iterator[httpx.Client]:
    """The service of the checkout at `root` (another one measures the code before a change)."""
    port = free_port()
    storage = tempfile.mkdtemp(prefix="bench-service-")
    env = {
        **os.environ,
        "PORT": str(port),
        "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": storage,
        "LOG_LEVEL": "error",
        **settings,
    }
    server = subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=root, stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s)
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                if client.get("/sys/healthcheck").json().get("ready"):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(30)
        shutil.rmtree(storage, ignore_errors=True)
