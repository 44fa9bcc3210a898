"""The run history over HTTP: what each run keeps, the filters and their checks, the settings, the caps."""

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from adapters.history.memory import InMemoryHistory
from domain.model import Json
from ports.history import RunRecord
from tests.e2e.history_app import client_for, error_of, eventually, runtime_with, save


async def big(params: Mapping[str, Json]) -> Json:
    return "x" * 70_000


@pytest.fixture
def client() -> Iterator[TestClient]:
    with client_for(runtime_with(big=big)) as client:
        yield client


def runs_of(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    answer = client.get(f"/v2/functions/demo/runs{query}")
    assert answer.status_code == 200, answer.text
    runs: list[dict[str, Any]] = answer.json()["runs"]
    return runs


def test_each_run_is_recorded_with_its_outcome(client: TestClient) -> None:
    save(client, f="echo", g="boom")
    assert client.post("/v2/functions/demo/run/f", json={"parameters": {"n": 1}}).status_code == 200
    assert client.post("/v2/functions/demo/run/g").status_code == 422
    failed, succeeded = runs_of(client)
    assert succeeded["function"] == "f" and succeeded["status"] == "succeeded"
    assert succeeded["parameters"] == {"n": 1} and succeeded["result"] == {"n": 1}
    assert succeeded["version"] == 1 and succeeded["async"] is False and succeeded["error"] is None
    assert isinstance(succeeded["duration"], float) and succeeded["startedAt"].endswith("Z")
    assert failed["status"] == "failed" and failed["result"] is None
    assert failed["error"]["type"] == "FunctionError" and failed["error"]["message"] == "boom"
    assert failed["id"] > succeeded["id"]  # time-ordered ids
    assert client.get(f"/v2/functions/demo/runs/{failed['id']}").json() == failed


def test_runs_refused_before_they_start_are_not_recorded(client: TestClient) -> None:
    save(client, f="echo")
    error_of(client.post("/v2/functions/demo/run/nothing"), 404, "NotFound")
    assert runs_of(client) == []


def test_filters_limit_and_paging(client: TestClient) -> None:
    save(client, f="echo", g="boom")
    for name in "fgfgf":
        client.post(f"/v2/functions/demo/run/{name}")
    assert [r["function"] for r in runs_of(client)] == list("fgfgf")
    assert [r["function"] for r in runs_of(client, "?function=g")] == ["g", "g"]
    assert [r["status"] for r in runs_of(client, "?status=failed")] == ["failed", "failed"]
    first_page = runs_of(client, "?limit=2")
    assert len(first_page) == 2
    second_page = runs_of(client, f"?limit=2&before={first_page[-1]['id']}")
    assert [r["id"] for r in second_page] == [r["id"] for r in runs_of(client)[2:4]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?status=done", "status"),
        ("?before=zz", "before"),
        ("?function=1bad", None),
        ("?sort=asc", "sort"),
    ],
)
def test_bad_filters_are_400s_naming_the_field(client: TestClient, query: str, field: str | None) -> None:
    save(client, f="echo")
    error = error_of(client.get(f"/v2/functions/demo/runs{query}"), 400, "InvalidRequest")
    assert error.get("field") == field


def test_bad_and_unknown_run_ids(client: TestClient) -> None:
    save(client, f="echo")
    assert error_of(client.get("/v2/functions/demo/runs/not-an-id"), 400, "InvalidRequest")["field"] == "id"
    error_of(client.get("/v2/functions/demo/runs/0123456789abcdef0123"), 404, "NotFound")
    error_of(client.get("/v2/functions/nobody/runs"), 404, "NotFound")


def test_run_history_zero_records_no_sync_runs() -> None:
    with client_for(runtime_with(), FUNCTIONS_RUN_HISTORY="0") as client:
        save(client, f="echo")
        assert client.post("/v2/functions/demo/run/f").status_code == 200
        assert runs_of(client) == []


def test_run_history_bounds_the_runs_kept() -> None:
    with client_for(runtime_with(), FUNCTIONS_RUN_HISTORY="3") as client:
        save(client, f="echo")
        for n in range(5):
            client.post("/v2/functions/demo/run/f", json={"parameters": {"n": n}})
        assert [r["parameters"]["n"] for r in runs_of(client)] == [4, 3, 2]


def test_parameters_off_keeps_neither_parameters_nor_results() -> None:
    with client_for(runtime_with(), FUNCTIONS_RUN_HISTORY_PARAMETERS="no") as client:
        save(client, f="echo")
        assert client.post("/v2/functions/demo/run/f", json={"parameters": {"secret": 1}}).status_code == 200
        (run,) = runs_of(client)
        assert run["status"] == "succeeded" and run["parameters"] is None and run["result"] is None


def test_values_over_the_cap_are_left_out_with_a_note(client: TestClient) -> None:
    save(client, f="echo", b="big")
    big_parameters = {"parameters": {"p": "y" * 70_000}}
    assert client.post("/v2/functions/demo/run/f", json=big_parameters).status_code == 200
    assert client.post("/v2/functions/demo/run/b").status_code == 200
    cut_result, cut_parameters = runs_of(client)
    assert cut_parameters["parameters"] is None and cut_parameters["result"] is None
    assert any("parameters not kept" in note for note in cut_parameters["notes"])
    assert cut_result["result"] is None and cut_result["status"] == "succeeded"
    assert any("result not kept" in note and "65536-byte cap" in note for note in cut_result["notes"])


class SlowHistory(InMemoryHistory):
    """A database whose writes take seconds: runs must answer all the same, meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.writes_done = 0

    async def record_runs(self, runs: Sequence[RunRecord]) -> None:
        await anyio.sleep(5.0)
        await super().record_runs(runs)
        self.writes_done += 1


def test_recording_never_holds_up_a_run_answer() -> None:
    history = SlowHistory()
    with client_for(runtime_with(), history) as client:
        save(client, f="echo")
        for n in range(3):
            answer = client.post("/v2/functions/demo/run/f", json={"parameters": {"n": n}})
            assert answer.status_code == 200 and answer.json()["result"] == {"n": n}
        assert history.writes_done == 0  # all three answered while the first write was under way
    assert len(anyio.run(lambda: history.runs("demo"))) == 3  # written by the stop, not lost


def test_runs_and_versions_survive_a_restart_in_the_storage_folder_sqlite(tmp_path: Path) -> None:
    from adapters.history import open_history

    def sqlite_client() -> Any:
        return client_for(runtime_with(), open_history(None, tmp_path))

    with sqlite_client() as client:
        save(client, f="echo")
        assert client.post("/v2/functions/demo/run/f", json={"parameters": {"n": 7}}).status_code == 200
    with sqlite_client() as client:
        save(client, f="echo")  # the store is in memory: save again; the history is on disk
        assert [v["version"] for v in client.get("/v2/functions/demo/versions").json()["versions"]] == [2, 1]
        assert eventually(lambda: runs_of(client), "the run read back")[0]["parameters"] == {"n": 7}
