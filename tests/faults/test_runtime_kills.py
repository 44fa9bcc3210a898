"""kill -9 of the Node host or of a Python kernel while runs are in flight, seen from an HTTP client:
the runs in flight answer 503 Unavailable and a run succeeds again within a second of the kill."""

import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import httpx
import pytest

from tests.faults.service import Service, cpu_ticks

pytestmark = [pytest.mark.anyio, pytest.mark.node, pytest.mark.kernel]

RECOVERY_S = 1.0
NODE = {
    "slow": {"code": "await new Promise((r) => setTimeout(r, 10000)); return 'late';"},
    "ok": {"code": "return 'node ok';"},
}
# A busy loop rather than a sleep, so the kernel that runs it is the one using CPU.
PYTHON = {
    "slow": {
        "code": "import time\nend = time.monotonic() + 10\nwhile time.monotonic() < end:\n    pass",
        "language": "python",
    },
    "ok": {"code": "return 'python ok'", "language": "python"},
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    served = Service(tmp_path_factory.mktemp("kills"))
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


@pytest.fixture
async def client(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        yield http


async def run(client: httpx.AsyncClient, workspace: str, function: str) -> httpx.Response:
    return await client.post(f"/v2/functions/{workspace}/run/{function}", json={})


async def first_success_after(client: httpx.AsyncClient, workspace: str, killed_at: float) -> float:
    """Seconds from the kill to the first 200 of `ok`; every answer before it must be a 503."""
    while True:
        answer = await run(client, workspace, "ok")
        if answer.status_code == 200:
            return time.monotonic() - killed_at
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "Unavailable", answer.text
        assert time.monotonic() - killed_at < RECOVERY_S, "no successful run within a second of the kill"
        await anyio.sleep(0.01)


class Victim:
    """A host process to SIGKILL, and when it was killed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.killed_at = 0.0

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.killed_at = time.monotonic()


async def kill_during_slow_runs(
    client: httpx.AsyncClient, workspace: str, choose: Callable[[], Awaitable[Victim]]
) -> tuple[Victim, list[httpx.Response]]:
    """Three runs of `slow` in flight, then the chosen host killed; the victim and the three answers."""
    answers: list[httpx.Response] = []

    async def slow() -> None:
        answers.append(await run(client, workspace, "slow"))

    async with anyio.create_task_group() as runs:
        for _ in range(3):
            runs.start_soon(slow)
        victim = await choose()
        victim.kill()
    return victim, answers


def assert_unavailable(answers: list[httpx.Response]) -> None:
    assert len(answers) == 3
    for answer in answers:
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["type"] == "Unavailable" and error["message"], error


async def test_a_killed_node_host_fails_its_runs_with_503_and_serves_again_within_a_second(
    service: Service, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/v2/functions/js-kill", json={"functions": NODE})).status_code == 200
    assert (await run(client, "js-kill", "ok")).json()["result"] == "node ok"
    [host] = service.hosts("nodejs")

    async def the_host() -> Victim:
        await anyio.sleep(0.3)  # the runs reach the host
        return Victim(host)

    victim, answers = await kill_during_slow_runs(client, "js-kill", the_host)
    assert_unavailable(answers)
    assert await first_success_after(client, "js-kill", victim.killed_at) < RECOVERY_S
    assert service.hosts("nodejs") not in ([], [host])


async def test_a_killed_python_kernel_fails_its_runs_with_503_and_serves_again_within_a_second(
    service: Service, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/v2/functions/py-kill", json={"functions": PYTHON})).status_code == 200
    assert (await run(client, "py-kill", "ok")).json()["result"] == "python ok"

    async def the_busy_kernel() -> Victim:  # the one that holds the workspace
        return Victim(await busiest(service.hosts("python")))

    victim, answers = await kill_during_slow_runs(client, "py-kill", the_busy_kernel)
    assert_unavailable(answers)
    assert await first_success_after(client, "py-kill", victim.killed_at) < RECOVERY_S
    assert victim.pid not in service.hosts("python")


async def busiest(pids: list[int]) -> int:
    """The process that used the most CPU over a short window: the kernel running the busy loop."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    await anyio.sleep(0.4)
    used = {pid: cpu_ticks(pid) - before[pid] for pid in pids}
    pid = max(used, key=lambda p: used[p])
    assert used[pid] > 0, used
    return pid
