"""The HTTP app on the real wiring with a scripted runtime, memory storage and (by default) memory history,
for the tests of versions, run history and async runs."""

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
from dependency_injector import providers
from starlette.testclient import TestClient

from adapters.history.memory import InMemoryHistory
from adapters.storage.memory import InMemoryStore
from domain.model import Json, Language
from entrypoints.container import Container, build_container
from entrypoints.http.app import create_app
from ports.history import History
from tests.fakes import PROGRAMS, Program, ScriptedRuntime

DEADLINE_S = 30.0  # generous: the suite runs on loaded 2-core machines


class Held:
    """A program that runs until released (a threading.Event: the test and the app run in other threads)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    async def __call__(self, params: Mapping[str, Json]) -> Json:
        self.started.set()
        while not self.release.is_set():
            await anyio.sleep(0.01)
        return {"held": dict(params)}


def runtime_with(**programs: Program) -> ScriptedRuntime:
    return ScriptedRuntime(programs={**PROGRAMS, **programs}, timeout_s=DEADLINE_S)


def container_for(runtime: ScriptedRuntime, history: History | None = None, **environ: str) -> Container:
    container = build_container({"REQUEST_MAX_SIZE": "1mb", **environ})
    container.store.override(providers.Object(InMemoryStore()))
    container.history.override(providers.Object(history or InMemoryHistory()))
    container.runtimes.override(providers.Dict({Language.NODEJS: providers.Object(runtime)}))
    return container


@contextmanager
def client_for(
    runtime: ScriptedRuntime, history: History | None = None, **environ: str
) -> Iterator[TestClient]:
    with TestClient(create_app(container_for(runtime, history, **environ))) as client:
        yield client


def save(client: TestClient, workspace: str = "demo", **functions: str) -> dict[str, Any]:
    body = {"functions": {name: {"code": code} for name, code in functions.items()}}
    answer = client.post(f"/v2/functions/{workspace}", json=body)
    assert answer.status_code == 200, answer.text
    saved: dict[str, Any] = answer.json()
    return saved


def error_of(answer: Any, status: int, kind: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["type"] == kind and error["message"]
    return error


def eventually(check: Callable[[], Any], what: str) -> Any:
    """`check()`'s first truthy value, polled until DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(DEADLINE_S), f"not within {DEADLINE_S} s: {what}"
