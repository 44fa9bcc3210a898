"""The whole service as users meet it: `functions serve`, real Node host, files on disk."""

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from tests.e2e.readme_calls import README_RUN, README_SAVE, data_of
from tests.e2e.serving import serving

pytestmark = pytest.mark.node


def curl(command: str, url: str) -> Any:
    script = command.replace("http://localhost:4000", url)  # run by a shell, as a user pastes it
    answer = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(answer.stdout)


def save(client: httpx.Client, workspace: str, **functions: Any) -> httpx.Response:
    body = {"functions": {n: f if isinstance(f, dict) else {"code": f} for n, f in functions.items()}}
    return client.post(f"/v2/functions/{workspace}", json=body)


def run(client: httpx.Client, workspace: str, function: str, **params: Any) -> httpx.Response:
    return client.post(f"/v2/functions/{workspace}/run/{function}", json={"parameters": params})


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_calls_work_as_written(tmp_path: Path) -> None:
    with serving(tmp_path) as url:
        assert curl(README_SAVE, url) == data_of(README_SAVE)  # "the same body should be returned"
        answer = curl(README_RUN, url)
    assert answer["result"] == "Hello world" and answer["logs"] == []
    assert isinstance(answer["duration"], float | int)


def test_the_readme_examples_of_shared_context_and_cache(tmp_path: Path) -> None:
    counter = (
        "let counter = cache['counter']\n\ncounter = (counter || 0) + 1\n\n"
        "cache['counter'] = counter;\n\nreturn counter;"
    )
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        assert save(
            client, "ctx", funcA='  return "world";', funcB='  return "hello " + (await funcA());'
        ).is_success
        assert run(client, "ctx", "funcB").json()["result"] == "hello world"
        reader = "  let counter = cache['counter'];\n  return \"Counter : \" + counter;"
        assert save(client, "mem", funcA=counter, funcB=reader).is_success
        assert [run(client, "mem", "funcA").json()["result"] for _ in range(3)] == [1, 2, 3]
        assert run(client, "mem", "funcB").json()["result"] == "Counter : 3"


def test_runs_say_cold_then_warm_with_server_timing(tmp_path: Path) -> None:
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        save(client, "w", f="console.warn('careful'); return 1;")
        first, second = run(client, "w", "f"), run(client, "w", "f")
    assert first.headers["x-functions-worker"] == "cold" and "cold;dur=" in first.headers["server-timing"]
    assert second.headers["x-functions-worker"] == "warm" and "run;dur=" in second.headers["server-timing"]
    assert second.json()["logs"][0]["level"] == "warn" and second.json()["logs"][0]["message"] == "careful"


@pytest.mark.parametrize("code", ["while (true) {}", "await new Promise(() => {});"])
def test_a_run_over_its_timeout_is_504_within_a_second_of_it(tmp_path: Path, code: str) -> None:
    with (
        serving(tmp_path, FUNCTIONS_RUN_TIMEOUT="1000") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        save(client, "w", loop=code, ok="return 'ok';")
        started = time.monotonic()
        answer = run(client, "w", "loop")
        took = time.monotonic() - started
        assert answer.status_code == 504 and answer.json()["error"]["type"] == "TimeoutError"
        assert 1.0 <= took < 2.0
        assert run(client, "w", "ok").json()["result"] == "ok"


def test_a_memory_bomb_is_422_resource_limit_and_the_workspace_recovers(tmp_path: Path) -> None:
    env = {"NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB": "64"}
    with serving(tmp_path, **env) as url, httpx.Client(base_url=url, timeout=30) as client:
        save(client, "w", bomb="const a = []; while (true) a.push(new Array(1e6).fill(1.5));", ok="return 1;")
        answer = run(client, "w", "bomb")
        assert answer.status_code == 422 and answer.json()["error"]["type"] == "ResourceLimitError"
        assert run(client, "w", "ok").json()["result"] == 1


def test_only_the_builtins_of_the_setting_can_be_required(tmp_path: Path) -> None:
    with serving(tmp_path, NODE_BUILTIN_MODULES="crypto") as url, httpx.Client(base_url=url) as client:
        save(
            client, "w", ok="return require('node:crypto').randomUUID().length;", no="return require('zlib');"
        )
        assert run(client, "w", "ok").json()["result"] == 36
        refused = run(client, "w", "no")
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["type"] == "FunctionError" and "'zlib'" in error["message"]
    assert (
        "NODE_BUILTIN_MODULES" in error["message"]
        and error["stack"].splitlines()[1].strip() == "at no (no:1:8)"
    )


def test_workspaces_survive_a_restart(tmp_path: Path) -> None:
    body = {"functions": {"f": {"code": "return 'kept';", "x-note": "mine"}}, "extra": [1, 2]}
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        assert client.post("/v2/functions/keep", json=body).json() == body
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v2/functions/keep").json() == body
        assert client.get("/v2/functions").json() == {"workspaces": ["keep"]}
        assert run(client, "keep", "f").json()["result"] == "kept"


def test_update_scripts_on_startup_rewrites_the_generated_scripts(tmp_path: Path) -> None:
    script = tmp_path / "w" / "index.js"
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        save(client, "w", f="return 1;")
    generated = script.read_text()
    script.write_text("// an older generator's output\n")
    with serving(tmp_path):
        assert script.read_text() == "// an older generator's output\n"
    with serving(tmp_path, UPDATE_SCRIPTS_ON_STARTUP="yes"):
        assert script.read_text() == generated


def test_a_save_is_seen_by_the_next_run_on_another_instance_sharing_the_folder(tmp_path: Path) -> None:
    with serving(tmp_path) as first, serving(tmp_path) as second:
        with httpx.Client(base_url=first) as a, httpx.Client(base_url=second) as b:
            save(a, "w", f="return 'v1';")
            assert run(b, "w", "f").json()["result"] == "v1"
            save(a, "w", f="return 'v2';")
            assert run(b, "w", "f").json()["result"] == "v2"


async def _concurrently(url: str, requests: list[tuple[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post(path, json=body) for path, body in requests))


def test_fifty_concurrent_runs_of_one_workspace(tmp_path: Path) -> None:
    code = {
        "code": "await new Promise((r) => setTimeout(r, 5)); return i * i;",
        "parameters": {"i": {"type": "integer"}},
    }
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        save(client, "w", square=code)
        answers = asyncio.run(
            _concurrently(url, [("/v2/functions/w/run/square", {"parameters": {"i": i}}) for i in range(50)])
        )
    assert [a.status_code for a in answers] == [200] * 50
    assert [a.json()["result"] for a in answers] == [i * i for i in range(50)]


def test_twenty_concurrent_saves_leave_one_whole_version(tmp_path: Path) -> None:
    bodies = [
        {"functions": {f"f{j}": {"code": f"return {i};"} for j in range(5)}, "version": i} for i in range(20)
    ]
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        answers = asyncio.run(_concurrently(url, [("/v2/functions/w", body) for body in bodies]))
        assert all(a.status_code == 200 for a in answers)
        final = client.get("/v2/functions/w").json()
        assert final in bodies
        results = {run(client, "w", f"f{j}").json()["result"] for j in range(5)}
    assert results == {final["version"]}
    assert YAML(typ="safe").load((tmp_path / "w" / "workspace.yaml").read_text()) == final
