"""RemotePythonRuntime against the python-api app in-process: the wire, its errors and its failures."""

import asyncio
import math
from collections.abc import AsyncIterator, Mapping

import anyio
import pytest
from attrs import define, field

from adapters.python.runtime import PythonRuntime
from adapters.remote.runtime import RemotePythonRuntime
from adapters.remote.wire import outcome_from_wire, outcome_to_wire
from domain.errors import CompileError, InvalidRequest, NotFound, Unavailable
from domain.model import Function, Json, Language, LogEntry, Outcome, Status, Workspace
from entrypoints.cli.main import main
from entrypoints.container import build_container
from tests.e2e.serving import free_port
from tests.fakes import PROGRAMS, ScriptedRuntime
from tests.remote import InProcessRemote

pytestmark = pytest.mark.anyio
TIMEOUT_MS = 500
RICH = Outcome(
    Status.FAILED,
    result=None,
    logs=[LogEntry("warn", "careful \ud800 é", "2026-01-01T00:00:00.000Z")],
    duration_ms=1.25,
    error={"name": "ValueError", "message": "boom", "stack": "ValueError: boom\n    at f (line 2)"},
    cold=True,
    timings={"queue": 0.5, "cold": 12.0, "run": 1.25},
)


@define
class FixedRuntime:
    """Answers every run with `outcome`, after `delay_s`."""

    outcome: Outcome
    delay_s: float = 0.0
    language: Language = Language.PYTHON
    evicted: list[str] = field(factory=list)

    async def start(self) -> None:
        pass

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        return {"main.py": "pass"}

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        await anyio.sleep(self.delay_s)
        return self.outcome

    async def evict(self, workspace_id: str) -> None:
        self.evicted.append(workspace_id)

    def health(self) -> Mapping[str, Json]:
        return {"status": "ok", "workers": 3}

    async def aclose(self) -> None:
        pass


def python_workspace(workspace_id: str = "demo", code: str = "echo", revision: str = "r1") -> Workspace:
    functions = {"echo": Function(code, Language.PYTHON), "js": Function("return 1;")}
    return Workspace(workspace_id, functions, revision=revision)


@pytest.fixture
async def remote() -> AsyncIterator[InProcessRemote]:
    fake = ScriptedRuntime(programs=PROGRAMS, language=Language.PYTHON, timeout_s=TIMEOUT_MS / 1000)
    served = InProcessRemote(fake, timeout_ms=TIMEOUT_MS)
    await served.start()
    try:
        yield served
    finally:
        await served.aclose()


def runs_sent(remote: InProcessRemote) -> list[bool]:
    """For each run request that crossed the wire: whether it carried the workspace's body."""
    return ["workspace" in body for path, body in remote.wire.sent if path == "/v1/run"]


async def test_an_outcome_crosses_the_wire_unchanged() -> None:
    assert outcome_from_wire(outcome_to_wire(RICH)) == RICH


async def test_a_remote_run_gives_the_runtimes_outcome_exactly() -> None:
    served = InProcessRemote(FixedRuntime(RICH), timeout_ms=TIMEOUT_MS)
    await served.start()
    try:
        assert await served.run(python_workspace(), "echo", {}) == RICH
    finally:
        await served.aclose()


async def test_the_first_run_sends_the_body_once_and_later_runs_send_none(remote: InProcessRemote) -> None:
    for n in range(3):
        assert (await remote.run(python_workspace(), "echo", {"n": n})).result == {"n": n}
    assert runs_sent(remote) == [False, True, False, False]


async def test_a_restarted_python_api_is_sent_the_body_again(remote: InProcessRemote) -> None:
    await remote.run(python_workspace(), "echo", {})
    await remote.restart_server()
    assert (await remote.run(python_workspace(), "echo", {"again": 1})).result == {"again": 1}
    assert runs_sent(remote) == [False, True, False, True]


async def test_new_code_is_sent_and_run_after_a_save(remote: InProcessRemote) -> None:
    await remote.run(python_workspace(), "echo", {})
    changed = python_workspace(code="boom", revision="r2")
    assert (await remote.run(changed, "echo", {})).status is Status.FAILED
    assert runs_sent(remote) == [False, True, False, True]


async def test_same_revision_with_other_content_never_runs_the_wrong_code(remote: InProcessRemote) -> None:
    # Two services with in-memory stores, sharing one python-api, both call their first save "mem-1".
    await remote.run(python_workspace(revision="mem-1"), "echo", {})
    other = RemotePythonRuntime(url="http://python-api.test", timeout_ms=TIMEOUT_MS, transport=remote.wire)
    await other.start()
    try:
        boom = python_workspace(code="boom", revision="mem-1")
        assert (await other.run(boom, "echo", {})).status is Status.FAILED
    finally:
        await other.aclose()


async def test_an_evicted_workspace_is_forgotten_on_the_remote_too(remote: InProcessRemote) -> None:
    await remote.run(python_workspace(), "echo", {})
    await remote.evict("demo")
    await remote.run(python_workspace(), "echo", {})
    assert runs_sent(remote) == [False, True, False, True]
    assert isinstance(remote.inner, ScriptedRuntime) and remote.inner.evicted == ["demo"]


async def test_a_compile_error_comes_back_with_its_function_line_and_column(remote: InProcessRemote) -> None:
    with pytest.raises(CompileError) as raised:
        await remote.prepare(python_workspace(code="no such program"))
    assert raised.value.details == {"function": "echo", "line": 1, "column": 1}
    assert "unknown program" in raised.value.message


async def test_an_unknown_function_is_not_found(remote: InProcessRemote) -> None:
    with pytest.raises(NotFound, match="nope"):
        await remote.run(python_workspace(), "nope", {})


async def test_a_bad_request_to_the_python_api_is_invalid_request(remote: InProcessRemote) -> None:
    with pytest.raises(InvalidRequest, match="revision"):
        await remote.remote._post("/v1/run", {"id": "demo", "revision": "", "function": "echo"})


async def test_a_timeout_on_the_remote_is_a_timed_out_outcome(remote: InProcessRemote) -> None:
    ws = Workspace("demo", {"spin": Function("spin", Language.PYTHON)}, revision="r1")
    assert (await remote.run(ws, "spin", {})).status is Status.TIMED_OUT


async def test_a_result_json_cannot_hold_is_not_serializable() -> None:
    served = InProcessRemote(FixedRuntime(Outcome(Status.SUCCEEDED, result=math.nan)), timeout_ms=TIMEOUT_MS)
    await served.start()
    try:
        assert (await served.run(python_workspace(), "echo", {})).status is Status.NOT_SERIALIZABLE
    finally:
        await served.aclose()


async def test_a_remote_that_does_not_answer_is_unavailable_after_the_timeout_and_margin() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accepts the connection, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    runtime = RemotePythonRuntime(url=url, timeout_ms=50, margin_s=0.2)
    try:
        await runtime.start()  # the health probe gives up after its short timeout
        assert runtime.health()["status"] == "unavailable"
        with pytest.raises(Unavailable, match=r"did not answer within 0\.25 s"):
            await runtime.run(python_workspace(), "echo", {})
    finally:
        await runtime.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_unreachable_remote_is_unavailable_naming_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    runtime = RemotePythonRuntime(url=url, timeout_ms=TIMEOUT_MS)
    await runtime.start()  # a remote that is down does not stop the service from starting
    try:
        assert runtime.health()["status"] == "unavailable" and url in str(runtime.health()["reason"])
        with pytest.raises(Unavailable, match=url):
            await runtime.run(python_workspace(), "echo", {})
        with pytest.raises(Unavailable, match=url):
            await runtime.prepare(python_workspace())
        await runtime.evict("demo")  # logged, not raised: a save must not fail on it
    finally:
        await runtime.aclose()


async def test_health_reports_the_remote_runtimes_own_state(remote: InProcessRemote) -> None:
    health = remote.health()
    assert health["status"] == "ok" and health["url"] == "http://python-api.test" and health["protocol"] == 1


async def test_the_api_key_is_sent_and_required() -> None:
    keyed = InProcessRemote(FixedRuntime(RICH), timeout_ms=TIMEOUT_MS, api_key="s3cret", client_key="s3cret")
    await keyed.start()
    try:
        assert keyed.health()["status"] == "ok"
        assert await keyed.run(python_workspace(), "echo", {}) == RICH
    finally:
        await keyed.aclose()


async def test_a_wrong_api_key_makes_the_remote_unavailable_not_the_caller_unauthorized() -> None:
    wrong = InProcessRemote(FixedRuntime(RICH), timeout_ms=TIMEOUT_MS, api_key="s3cret", client_key="nope")
    await wrong.start()
    try:
        assert wrong.health()["status"] == "unavailable" and "Unauthorized" in str(wrong.health()["reason"])
        with pytest.raises(Unavailable, match="Unauthorized"):
            await wrong.run(python_workspace(), "echo", {})
    finally:
        await wrong.aclose()


async def test_health_is_refreshed_in_the_background() -> None:
    served = InProcessRemote(FixedRuntime(RICH), timeout_ms=TIMEOUT_MS)
    served.remote = RemotePythonRuntime(
        url="http://python-api.test", timeout_ms=TIMEOUT_MS, transport=served.wire, health_every_s=0.05
    )
    await served.start()
    try:
        probes = sum(path == "/v1/health" for path, _ in served.wire.sent)
        await anyio.sleep(0.3)
        assert sum(path == "/v1/health" for path, _ in served.wire.sent) > probes
    finally:
        await served.aclose()


def test_the_container_runs_python_remotely_exactly_when_python_api_url_is_set() -> None:
    remote = build_container({"PYTHON_API_URL": "http://python-box:8000", "FUNCTIONS_API_KEY": "k"})
    assert isinstance(remote.python_runtime(), RemotePythonRuntime)
    assert remote.python_runtime().url == "http://python-box:8000"
    assert isinstance(build_container({}).python_runtime(), PythonRuntime)


def test_python_api_with_a_bad_port_stops_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYTHON_API_PORT", "eighty")
    assert main(["python-api"]) == 2
    assert "PYTHON_API_PORT='eighty' is invalid" in capsys.readouterr().err
