"""Async runs and the concurrency limit over HTTP: 202 and Location, queued -> running -> outcome, cancel,
429 with Retry-After, and runs a stopped service left behind."""

from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from adapters.history import open_history
from adapters.history.memory import InMemoryHistory
from ports.history import RunRecord
from tests.e2e.history_app import Held, client_for, error_of, eventually, runtime_with, save, wait_for


def queue(client: TestClient, function: str, **params: Any) -> str:
    answer = client.post(f"/v2/functions/demo/run/{function}?async=true", json={"parameters": params})
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["id"]
    assert answer.json() == {"id": run_id, "status": "queued"}
    assert answer.headers["location"] == f"/v2/functions/demo/runs/{run_id}"
    return run_id


def run_of(client: TestClient, run_id: str) -> dict[str, Any]:
    answer = client.get(f"/v2/functions/demo/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()
    return run


def finished(client: TestClient, run_id: str) -> dict[str, Any]:
    done: dict[str, Any] = eventually(
        lambda: (run := run_of(client, run_id))["status"] not in ("queued", "running") and run,
        f"run {run_id} finished",
    )
    return done


def test_an_async_run_goes_queued_running_then_answers_as_a_sync_run_would() -> None:
    first, second = Held(), Held()
    with client_for(runtime_with(first=first, second=second), FUNCTIONS_MAX_CONCURRENT_RUNS="1") as client:
        save(client, a="first", b="second", g="boom")
        running_id = queue(client, "a", n=1)
        wait_for(first.started, "the first run started")
        queued_id = queue(client, "b", n=2)
        assert run_of(client, running_id)["status"] == "running"
        assert run_of(client, queued_id)["status"] == "queued" and not second.started.is_set()
        first.release.set()
        second.release.set()
        done = finished(client, running_id)
        assert done["result"] == {"held": {"n": 1}} and done["async"] is True and done["logs"] == []
        assert isinstance(done["duration"], float) and done["version"] == 1
        assert finished(client, queued_id)["result"] == {"held": {"n": 2}}
        failed = finished(client, queue(client, "g"))
        assert failed["status"] == "failed" and failed["error"]["type"] == "FunctionError"


def test_a_sync_run_past_the_limit_is_a_429_with_retry_after() -> None:
    held = Held()
    with client_for(runtime_with(held=held), FUNCTIONS_MAX_CONCURRENT_RUNS="1") as client:
        save(client, h="held", f="echo")
        run_id = queue(client, "h")
        wait_for(held.started, "the async run started")
        refused = client.post("/v2/functions/demo/run/f")
        error = error_of(refused, 429, "TooManyRequests")
        assert refused.headers["retry-after"] == "1" and error["retryAfter"] == 1
        save(client, "other", f="echo")  # the limit is per workspace
        assert client.post("/v2/functions/other/run/f").status_code == 200
        held.release.set()
        finished(client, run_id)
        assert client.post("/v2/functions/demo/run/f").status_code == 200


def test_cancelling_a_queued_run_means_it_never_runs_and_a_running_one_stops() -> None:
    first, second = Held(), Held()
    runtime = runtime_with(first=first, second=second)
    with client_for(runtime, FUNCTIONS_MAX_CONCURRENT_RUNS="1") as client:
        save(client, a="first", b="second")
        running_id = queue(client, "a")
        wait_for(first.started, "the first run started")
        queued_id = queue(client, "b")
        cancelled = client.delete(f"/v2/functions/demo/runs/{queued_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        stopped = client.delete(f"/v2/functions/demo/runs/{running_id}")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "cancelled" and stopped.json()["error"]["type"] == "Cancelled"
        assert run_of(client, queued_id)["status"] == "cancelled"
        assert [call[1] for call in runtime.calls] == ["a"]  # b never ran
        error_of(client.delete(f"/v2/functions/demo/runs/{running_id}"), 409, "Conflict")
        error_of(client.delete("/v2/functions/demo/runs/0123456789abcdef0123"), 404, "NotFound")
        error_of(client.delete("/v2/functions/demo/runs/nope"), 400, "InvalidRequest")


def test_an_async_run_is_checked_before_it_is_queued() -> None:
    with client_for(runtime_with()) as client:
        save(client, f="echo")
        error_of(client.post("/v2/functions/demo/run/nothing?async=true"), 404, "NotFound")
        error_of(client.post("/v2/functions/nobody/run/f?async=true"), 404, "NotFound")
        bad = client.post("/v2/functions/demo/run/f?async=maybe")
        assert error_of(bad, 400, "InvalidRequest")["field"] == "async"
        assert client.post("/v2/functions/demo/run/f?async=false").status_code == 200


def test_async_runs_are_recorded_even_with_the_run_history_off() -> None:
    environ = {"FUNCTIONS_RUN_HISTORY": "0", "FUNCTIONS_RUN_HISTORY_PARAMETERS": "no"}
    with client_for(runtime_with(), None, **environ) as client:
        save(client, f="echo")
        done = finished(client, queue(client, "f", secret=1))
        assert done["result"] == {"secret": 1} and done["parameters"] is None  # its result is its answer
        assert client.post("/v2/functions/demo/run/f").status_code == 200
        assert [r["async"] for r in client.get("/v2/functions/demo/runs").json()["runs"]] == [True]


def test_async_runs_left_unfinished_by_a_crash_are_failed_at_the_next_start(tmp_path: Path) -> None:
    async def crashed() -> None:  # what a killed service leaves: records still queued and running
        history = open_history(None, tmp_path)
        await history.start()
        when = "2026-01-01T00:00:00Z"
        await history.record_runs(
            [
                RunRecord("0190000000000000aaaa", "demo", "f", "queued", when, is_async=True),
                RunRecord("0190000000000001aaaa", "demo", "f", "running", when, is_async=True),
            ]
        )
        await history.aclose()

    anyio.run(crashed)
    with client_for(runtime_with(), open_history(None, tmp_path)) as client:
        save(client, f="echo")
        for run_id in ("0190000000000000aaaa", "0190000000000001aaaa"):
            run = run_of(client, run_id)
            assert run["status"] == "failed" and run["error"]["type"] == "Unavailable"
            assert "stopped" in run["error"]["message"]


def test_a_graceful_stop_fails_the_async_runs_still_queued_with_a_reason() -> None:
    held = Held()
    history = InMemoryHistory()
    environ = {"FUNCTIONS_MAX_CONCURRENT_RUNS": "1", "SHUTDOWN_GRACE_PERIOD": "0"}
    with client_for(runtime_with(held=held), history, **environ) as client:
        save(client, h="held")
        running_id = queue(client, "h")
        wait_for(held.started, "the async run started")
        queued_id = queue(client, "h")
    runs = {run.id: run for run in anyio.run(lambda: history.runs("demo"))}
    assert {runs[running_id].status, runs[queued_id].status} <= {"failed", "unavailable"}
    for run_id in (running_id, queued_id):
        assert "stopped" in runs[run_id].error["message"] or "stopping" in runs[run_id].error["message"]


@pytest.mark.node
def test_an_async_run_and_a_restore_on_real_node(tmp_path: Path) -> None:
    import httpx

    from tests.e2e.serving import serving

    with serving(tmp_path, FUNCTIONS_MAX_CONCURRENT_RUNS="2") as url, httpx.Client(base_url=url) as client:
        hi = {"code": "console.log('hi'); return 'hi ' + name;", "parameters": {"name": {"type": "string"}}}
        first = {"functions": {"hi": hi}}
        assert client.post("/v2/functions/demo", json=first).status_code == 200
        second = {"functions": {"hi": {"code": "return 'bye';"}}}
        assert client.post("/v2/functions/demo", json=second).status_code == 200
        assert client.post("/v2/functions/demo/versions/1/restore").status_code == 200
        queued = client.post("/v2/functions/demo/run/hi?async=true", json={"parameters": {"name": "Ada"}})
        assert queued.status_code == 202
        location = queued.headers["location"]
        done = eventually(
            lambda: (run := client.get(location).json())["status"] not in ("queued", "running") and run,
            "the async run finished",
        )
        assert done["status"] == "succeeded", done["error"]
        assert done["result"] == "hi Ada" and done["version"] == 3
        assert [entry["message"] for entry in done["logs"]] == ["hi"]
