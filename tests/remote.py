"""A Runtime served by the python-api and reached through RemotePythonRuntime, in-process or as a process."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

import anyio
import httpx

from adapters.remote.runtime import RemotePythonRuntime
from domain.model import Json, Language, Outcome, Workspace
from entrypoints.http.python_api import create_python_api
from ports.runtime import Runtime
from tests.e2e.serving import free_port, get_json

IN_PROCESS_URL = "http://python-api.test"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests on, keeping (path, JSON body) of each: tests see what crossed the wire."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, Json]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.url.path, body))
        return await self.inner.handle_async_request(request)


class ViaRemote:
    """The Runtime port of `self.remote`, a RemotePythonRuntime; subclasses say what serves it."""

    language = Language.PYTHON
    remote: RemotePythonRuntime

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        return await self.remote.prepare(workspace)

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        return await self.remote.run(workspace, function, params)

    async def evict(self, workspace_id: str) -> None:
        await self.remote.evict(workspace_id)

    def health(self) -> Mapping[str, Json]:
        return self.remote.health()


class InProcessRemote(ViaRemote):
    """`inner` behind `create_python_api`, driven through a RemotePythonRuntime over ASGI (no socket)."""

    def __init__(
        self, inner: Runtime, *, timeout_ms: int, api_key: str | None = None, client_key: str | None = None
    ) -> None:
        self.inner = inner
        self.app = create_python_api(inner, api_key=api_key)
        self.wire = RecordingTransport(httpx.ASGITransport(app=self.app))
        self.remote = RemotePythonRuntime(
            url=IN_PROCESS_URL, timeout_ms=timeout_ms, api_key=client_key, transport=self.wire
        )
        self._lifespan: AbstractAsyncContextManager[Any] | None = None

    async def start(self) -> None:
        # ASGITransport runs no lifespan: enter the app's own, as a server would.
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        await self.remote.start()

    async def restart_server(self) -> None:
        """The python-api restarts: it forgets every workspace it held."""
        assert self._lifespan is not None
        await self._lifespan.__aexit__(None, None, None)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()

    async def aclose(self) -> None:
        await self.remote.aclose()
        if self._lifespan is not None:
            await self._lifespan.__aexit__(None, None, None)


class ProcessRemote(ViaRemote):
    """A real `functions python-api` process (the embedded PythonRuntime, real kernels), over HTTP."""

    def __init__(self, *, timeout_ms: int, **environ: str) -> None:
        self.timeout_ms = timeout_ms
        self._process = python_api_process(
            environ={"PYTHON_FUNCTIONS_RUN_TIMEOUT": str(timeout_ms), **environ}
        )

    async def start(self) -> None:
        url = await anyio.to_thread.run_sync(self._process.__enter__)  # waits for its health, blocking
        self.remote = RemotePythonRuntime(url=url, timeout_ms=self.timeout_ms)
        await self.remote.start()

    async def aclose(self) -> None:
        await self.remote.aclose()
        await anyio.to_thread.run_sync(self._process.__exit__, None, None, None)


# A python-api process serving the ScriptedRuntime of tests/fakes.py, for end-to-end tests of the wire.
FAKE_SERVER = """
import asyncio, sys
from entrypoints.cli.main import hypercorn_config, serve_until_signalled
from entrypoints.http.python_api import create_python_api
from entrypoints.settings import load_settings
from domain.model import Language
from tests.fakes import PROGRAMS, ScriptedRuntime

settings = load_settings()
runtime = ScriptedRuntime(programs=PROGRAMS, language=Language.PYTHON, timeout_s=float(sys.argv[1]))
app = create_python_api(runtime, api_key=settings.api_key)
asyncio.run(serve_until_signalled(app, hypercorn_config(settings, settings.python_api_port)))
"""
REAL_SERVER = "from entrypoints.cli.main import main; raise SystemExit(main(['python-api']))"


@contextmanager
def python_api_process(
    *, fake_timeout_s: float | None = None, port: int | None = None, environ: Mapping[str, str] | None = None
) -> Iterator[str]:
    """A python-api process on `port` or a free one (the real `functions python-api`, or the fake runtime
    served the same way when `fake_timeout_s` is given); yields its URL, stops it with SIGTERM after."""
    port = port or free_port()
    env = {**os.environ, "PYTHON_API_PORT": str(port), **(environ or {})}
    code = REAL_SERVER if fake_timeout_s is None else FAKE_SERVER
    argv = [sys.executable, "-c", code] + ([] if fake_timeout_s is None else [str(fake_timeout_s)])
    server = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        get_json(f"{url}/sys/healthcheck", time.monotonic() + 20)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert "Traceback" not in err, err
