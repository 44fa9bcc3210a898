"""SIGTERM on `functions serve`: new runs answer 503, runs in flight finish within the grace period,
and a run still going after it is answered 503 rather than dropped; then the process ends cleanly."""

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serving import serving_process

pytestmark = pytest.mark.node
WAIT = "await new Promise((done) => setTimeout(done, {ms})); return {answer};"
FUNCTIONS = {
    "functions": {
        "slow": {"code": WAIT.format(ms=1000, answer='"done"')},
        "stuck": {"code": WAIT.format(ms=15000, answer='"never"')},
        "quick": {"code": "return 1;"},
    }
}


def post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def in_background(answers: dict[str, tuple[int, Any]], name: str, url: str) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.__setitem__(name, post(url, {})))
    thread.start()
    return thread


def test_sigterm_drains_runs_in_flight_refuses_new_ones_and_cuts_the_rest(tmp_path: Path) -> None:
    with serving_process(tmp_path / "data", SHUTDOWN_GRACE_PERIOD="3") as (url, server):
        assert post(f"{url}/v2/functions/demo", FUNCTIONS)[0] == 200
        assert get(f"{url}/sys/healthcheck")["ready"] is True
        assert status_of(f"{url}/sys/healthcheck?ready") == 200  # a readiness probe's view
        answers: dict[str, tuple[int, Any]] = {}
        threads = [
            in_background(answers, name, f"{url}/v2/functions/demo/run/{name}") for name in ("slow", "stuck")
        ]
        time.sleep(0.3)
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        refused = post(f"{url}/v2/functions/demo/run/quick", {})
        health = get(f"{url}/sys/healthcheck")
        readiness = status_of(f"{url}/sys/healthcheck?ready")
        for thread in threads:
            thread.join(timeout=20)
        server.wait(timeout=20)
        took = time.monotonic() - stopped_at
    assert refused[0] == 503 and "stopping" in refused[1]["error"]["message"]
    assert health["ready"] is False and health["state"] == "stopping"
    assert readiness == 503  # the load balancer stops sending runs here; liveness (plain) stays 200
    assert answers["slow"] == (
        200,
        {"result": "done", "logs": [], "duration": answers["slow"][1]["duration"]},
    )
    status, cut = answers["stuck"]
    assert status == 503 and "SHUTDOWN_GRACE_PERIOD" in cut["error"]["message"]
    assert 2.5 < took < 8
