"""Saved versions over HTTP: listed, read back exactly as sent, bounded, restored, and deleted with their
workspace."""

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from adapters.history.memory import InMemoryHistory
from tests.e2e.history_app import client_for, error_of, runtime_with, save


@pytest.fixture
def client() -> Iterator[TestClient]:
    with client_for(runtime_with()) as client:
        yield client


def test_every_save_keeps_a_version_listed_newest_first(client: TestClient) -> None:
    save(client, f="echo")
    save(client, f="echo", g="boom")
    versions = client.get("/v2/functions/demo/versions").json()["versions"]
    assert [(v["version"], v["functions"], v["current"]) for v in versions] == [
        (2, ["f", "g"], True),
        (1, ["f"], False),
    ]
    assert all(v["savedAt"].endswith("Z") for v in versions)


def test_a_version_reads_back_exactly_as_it_was_sent(client: TestClient) -> None:
    body = {"functions": {"f": {"code": "echo", "x-tag": [1, {"b": 2, "a": 1}]}}, "owner": "ada"}
    assert client.post("/v2/functions/demo", json=body).status_code == 200
    save(client, f="boom")
    answer = client.get("/v2/functions/demo/versions/1")
    assert answer.status_code == 200 and answer.json() == body
    assert list(answer.json()["functions"]["f"]["x-tag"][1]) == ["b", "a"]  # key order as sent


def test_a_refused_save_keeps_no_version(client: TestClient) -> None:
    save(client, f="echo")
    refused = client.post("/v2/functions/demo", json={"functions": {"f": {"code": "no such program"}}})
    error_of(refused, 400, "CompileError")
    assert [v["version"] for v in client.get("/v2/functions/demo/versions").json()["versions"]] == [1]


@pytest.mark.parametrize("number", ["0", "-1", "x", "1.5", "99999999999999999999"])
def test_a_version_number_that_is_not_a_positive_integer_is_a_400(client: TestClient, number: str) -> None:
    save(client, f="echo")
    read = client.get(f"/v2/functions/demo/versions/{number}")
    assert error_of(read, 400, "InvalidRequest")["field"] == "version"
    restore = client.post(f"/v2/functions/demo/versions/{number}/restore")
    assert error_of(restore, 400, "InvalidRequest")["field"] == "version"


def test_a_version_not_kept_and_an_unknown_workspace_are_404s(client: TestClient) -> None:
    save(client, f="echo")
    error_of(client.get("/v2/functions/demo/versions/2"), 404, "NotFound")
    error_of(client.post("/v2/functions/demo/versions/2/restore"), 404, "NotFound")
    error_of(client.get("/v2/functions/nobody/versions"), 404, "NotFound")
    error_of(client.get("/v2/functions/bad%20id/versions"), 400, "InvalidRequest")


def test_versions_kept_bounds_them() -> None:
    with client_for(runtime_with(), FUNCTIONS_VERSIONS_KEPT="2") as client:
        for _ in range(4):
            save(client, f="echo")
        versions = client.get("/v2/functions/demo/versions").json()["versions"]
        assert [v["version"] for v in versions] == [4, 3]
        error_of(client.get("/v2/functions/demo/versions/2"), 404, "NotFound")


def test_restore_saves_the_version_again_and_the_next_run_uses_it(client: TestClient) -> None:
    save(client, f="echo")
    save(client, f="boom")
    error_of(client.post("/v2/functions/demo/run/f"), 422, "FunctionError")
    restored = client.post("/v2/functions/demo/versions/1/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"functions": {"f": {"code": "echo"}}}
    assert restored.headers["x-functions-version"] == "3"
    assert client.get("/v2/functions/demo").json() == restored.json()
    ran = client.post("/v2/functions/demo/run/f", json={"parameters": {"n": 1}})
    assert ran.status_code == 200 and ran.json()["result"] == {"n": 1}
    versions = client.get("/v2/functions/demo/versions").json()["versions"]
    assert [(v["version"], v["current"]) for v in versions] == [(3, True), (2, False), (1, False)]
    assert client.get("/v2/functions/demo/runs?limit=1").json()["runs"][0]["version"] == 3


def test_deleting_a_workspace_deletes_its_versions_and_runs() -> None:
    history = InMemoryHistory()
    with client_for(runtime_with(), history) as client:
        save(client, f="echo")
        save(client, f="echo")
        assert client.post("/v2/functions/demo/run/f").status_code == 200
        assert client.get("/v2/functions/demo/runs").json()["runs"]
        assert client.delete("/v2/functions/demo").status_code == 204
        error_of(client.get("/v2/functions/demo/versions"), 404, "NotFound")
        error_of(client.get("/v2/functions/demo/versions/1"), 404, "NotFound")
        save(client, f="echo")  # a new workspace of the same id starts afresh
        assert [v["version"] for v in client.get("/v2/functions/demo/versions").json()["versions"]] == [1]
        assert client.get("/v2/functions/demo/runs").json() == {"runs": []}
