"""Metrics, the access log and request ids, through the real app with a scripted runtime."""

import json
import logging
import re
from collections.abc import Iterator, Mapping

import pytest
from dependency_injector import providers
from starlette.testclient import TestClient

from domain.model import Json
from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.http.logs import JsonFormatter
from tests.e2e.services import ChattyRuntime, body, container_with, scripted


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text `text` (0 when it is not there)."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
            if found == labels:
                return float(match[3])
    return 0.0


@pytest.fixture
def chatty() -> ChattyRuntime:
    return ChattyRuntime(scripted())


@pytest.fixture
def client(chatty: ChattyRuntime) -> Iterator[TestClient]:
    with TestClient(create_app(container_with(chatty))) as client:
        assert client.post("/v2/functions/demo", json=body(up="shout", bad="boom")).status_code == 200
        yield client


def test_metrics_count_runs_by_language_outcome_workspace_and_function(client: TestClient) -> None:
    before = client.get("/metrics").text
    labels = {"language": "nodejs", "workspace": "demo"}
    assert sample(before, "functions_runs_total", outcome="succeeded", function="up", **labels) == 0
    client.post("/v2/functions/demo/run/up", json={"parameters": {"word": "hi"}})
    client.post("/v2/functions/demo/run/up", json={})
    client.post("/v2/functions/demo/run/bad", json={})
    after = client.get("/metrics")
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    assert sample(after.text, "functions_runs_total", outcome="succeeded", function="up", **labels) == 2
    assert sample(after.text, "functions_runs_total", outcome="failed", function="bad", **labels) == 1
    assert sample(after.text, "functions_run_duration_seconds_count", language="nodejs") == 3
    assert sample(after.text, "functions_cold_starts_total", language="nodejs") == 3


def test_metrics_read_workers_restarts_and_readiness_when_scraped(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert sample(text, "functions_workers", language="nodejs") == 3
    assert sample(text, "functions_host_restarts_total", language="nodejs") == 2
    assert sample(text, "functions_runtime_up", language="nodejs") == 1
    assert sample(text, "functions_run_queue_depth", language="nodejs") == 0
    assert sample(text, "functions_ready") == 1


def test_metrics_count_requests_by_route_and_their_sizes(client: TestClient) -> None:
    client.post("/v2/functions/demo/run/up", content=b'{"parameters": {"word": "abc"}}')
    text = client.get("/metrics").text
    route = "/v2/functions/{workspace}/run/{function}"
    assert sample(text, "functions_http_requests_total", route=route, status="200") == 1
    assert sample(text, "functions_http_request_size_bytes_sum", route=route) == 31
    assert sample(text, "functions_http_requests_total", route="/v2/functions/{workspace}", status="200") == 1


def test_workspace_and_function_labels_can_be_turned_off(chatty: ChattyRuntime) -> None:
    container = container_with(chatty, METRICS_WORKSPACE_LABELS="no")
    with TestClient(create_app(container)) as client:
        client.post("/v2/functions/demo", json=body(up="shout"))
        client.post("/v2/functions/demo/run/up", json={})
        text = client.get("/metrics").text
    assert sample(text, "functions_runs_total", language="nodejs", outcome="succeeded") == 1
    assert 'workspace="demo"' not in text


class InstallStats:
    """Stands in for the npm installer, of which the metrics read only `stats()`."""

    def stats(self) -> Mapping[str, int]:
        return {"installed": 4, "failed": 1}


def with_packages(container: Container) -> Container:
    container.packages.override(providers.Object(InstallStats()))
    return container


def test_dependency_installs_are_exported_from_the_installer_stats(chatty: ChattyRuntime) -> None:
    with TestClient(create_app(with_packages(container_with(chatty)))) as client:
        text = client.get("/metrics").text
    assert sample(text, "functions_dependency_installs_total", outcome="installed") == 4
    assert sample(text, "functions_dependency_installs_total", outcome="failed") == 1


def test_metrics_and_health_stay_open_when_an_api_key_is_set(chatty: ChattyRuntime) -> None:
    with TestClient(create_app(container_with(chatty, FUNCTIONS_API_KEY="s3cret"))) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/sys/healthcheck").status_code == 200
        assert client.get("/v2/functions").status_code == 401


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Json]]:
    formatter = JsonFormatter()
    lines: list[dict[str, Json]] = [
        json.loads(formatter.format(r)) for r in caplog.records if r.name == "functions.access"
    ]
    return lines


def test_the_json_access_line_carries_the_request_id_the_answer_carries(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="functions.access"):
        ran = client.post("/v2/functions/demo/run/bad", json={})
    (line,) = access_lines(caplog)
    assert re.fullmatch(r"[0-9a-f]{32}", ran.headers["x-request-id"])
    assert line["request_id"] == ran.headers["x-request-id"]
    assert line["method"] == "POST" and line["path"] == "/v2/functions/demo/run/bad"
    assert line["status"] == 422 and line["outcome"] == "failed"
    assert line["workspace"] == "demo" and line["function"] == "bad"
    assert isinstance(line["duration_ms"], float) and line["level"] == "info"


def test_a_sane_incoming_request_id_is_kept_and_an_odd_one_replaced(client: TestClient) -> None:
    kept = client.get("/v2/functions", headers={"x-request-id": "trace-42.a:b"})
    assert kept.headers["x-request-id"] == "trace-42.a:b"
    replaced = client.get("/v2/functions", headers={"x-request-id": "two words\tand a tab"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


def test_errors_are_logged_with_their_type_as_the_outcome(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="functions.access"):
        missing = client.post("/v2/functions/nope/run/f", json={})
    (line,) = access_lines(caplog)
    assert line["status"] == 404 and line["outcome"] == "NotFound"
    assert line["request_id"] == missing.headers["x-request-id"]


def test_user_output_reaches_the_service_log_only_at_debug(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        client.post("/v2/functions/demo/run/up", json={})
    assert not [r for r in caplog.records if r.name == "functions.user"]
    with caplog.at_level(logging.DEBUG):
        ran = client.post("/v2/functions/demo/run/up", json={})
    (said,) = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "functions.user"]
    assert said["message"] == "user says up" and said["request_id"] == ran.headers["x-request-id"]
    assert said["workspace"] == "demo" and said["user_level"] == "log"


def test_a_bug_of_ours_answers_and_logs_the_same_request_id(
    chatty: ChattyRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(container_with(chatty))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.post("/v2/functions/demo", json=body(up="shout"))
        del chatty.inner.programs["shout"]  # the runtime now raises KeyError: a bug, not a user error
        with caplog.at_level(logging.INFO):
            broken = client.post("/v2/functions/demo/run/up", json={})
        text = client.get("/metrics").text
    assert broken.status_code == 500
    request_id = broken.json()["error"]["requestId"]
    assert broken.headers["x-request-id"] == request_id
    (line,) = access_lines(caplog)
    assert line["request_id"] == request_id and line["status"] == 500 and line["outcome"] == "InternalError"
    labels = {"language": "nodejs", "workspace": "demo", "function": "up"}
    assert sample(text, "functions_runs_total", outcome="error", **labels) == 1
