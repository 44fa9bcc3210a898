"""kill -9 of the whole service in the middle of 20 concurrent saves, 20 times over the same storage:
after each restart every workspace.yaml parses, is one of the bodies sent for it (never a mix, never
older than a save that was acknowledged), and the workspace runs that version."""

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from ruamel.yaml import YAML

from tests.faults.service import Service

pytestmark = [pytest.mark.anyio, pytest.mark.node, pytest.mark.kernel]

ROUNDS = 20
SAVES = 20
WORKSPACES = {"js-one": "nodejs", "js-two": "nodejs", "py-one": "python", "py-two": "python"}
Body = dict[str, Any]


def body(workspace: str, version: str) -> Body:
    """A save of `workspace` whose function answers `version`; big enough to take a few writes."""
    language = WORKSPACES[workspace]
    code = f"return '{version}';" if language == "nodejs" else f"return '{version}'"
    filler = "\n".join(
        f"// line {n} of {version}" if language == "nodejs" else f"# line {n}" for n in range(200)
    )
    return {
        "functions": {
            "which": {"code": f"{filler}\n{code}", "language": language},
            "other": {"code": code, "language": language, "parameters": {"x": {"type": "number"}}},
        },
        "note": version,  # an unknown key, kept
    }


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def service(storage: Path) -> Iterator[list[Service]]:
    """The service of the current round (a list, so a test can replace it); stopped at the end."""
    current = [Service(storage)]
    try:
        current[0].wait_ready()
        yield current
    finally:
        current[0].kill()


async def test_kill_9_during_concurrent_saves_leaves_each_workspace_whole_and_runnable(
    storage: Path, service: list[Service]
) -> None:
    chance = random.Random()
    on_disk = {workspace: body(workspace, f"{workspace}-seed") for workspace in WORKSPACES}
    async with httpx.AsyncClient(base_url=service[0].url, timeout=30) as http:
        for workspace, seed in on_disk.items():
            assert (await http.post(f"/v2/functions/{workspace}", json=seed)).status_code == 200
    interrupted = 0  # rounds whose kill cut saves short: the point of the test
    for round_ in range(ROUNDS):
        sent = {
            i: (
                workspace := list(WORKSPACES)[i % len(WORKSPACES)],
                body(workspace, f"{workspace}-r{round_}-s{i}"),
            )
            for i in range(SAVES)
        }
        acknowledged = await saves_until_killed(service[0], sent, kill_after=chance.randrange(SAVES))
        interrupted += len(acknowledged) < SAVES
        service[0] = Service(storage)  # the next round's victim
        service[0].wait_ready()
        for workspace in WORKSPACES:
            bodies = [b for w, b in sent.values() if w == workspace]
            saved = read_yaml(storage / workspace / "workspace.yaml")
            assert saved in [on_disk[workspace], *bodies], (
                f"round {round_}: {workspace} is none of its bodies"
            )
            if any(w == workspace for w, _ in acknowledged):
                assert saved != on_disk[workspace], (
                    f"round {round_}: an acknowledged save of {workspace} is lost"
                )
            on_disk[workspace] = saved
        await assert_runs(service[0], on_disk)
    assert sorted(p.parent.name for p in storage.glob("*/workspace.yaml")) == sorted(WORKSPACES)
    assert interrupted >= ROUNDS // 2, f"only {interrupted} of {ROUNDS} kills landed during the saves"


async def saves_until_killed(
    victim: Service, sent: dict[int, tuple[str, Body]], kill_after: int
) -> list[tuple[str, Body]]:
    """All saves at once; SIGKILL once `kill_after` of them were answered. The acknowledged ones."""
    acknowledged: list[tuple[str, Body]] = []
    enough = anyio.Event()

    async def save(http: httpx.AsyncClient, workspace: str, saved: Body) -> None:
        try:
            answer = await http.post(f"/v2/functions/{workspace}", json=saved)
        except httpx.TransportError:  # killed before it answered
            return
        finally:
            if len(acknowledged) >= kill_after:
                enough.set()
        assert answer.status_code == 200, answer.text
        acknowledged.append((workspace, saved))
        if len(acknowledged) >= kill_after:
            enough.set()

    limits = httpx.Limits(max_connections=len(sent))
    async with httpx.AsyncClient(base_url=victim.url, timeout=30, limits=limits) as http:
        async with anyio.create_task_group() as saves:
            for workspace, saved in sent.values():
                saves.start_soon(save, http, workspace, saved)
            await enough.wait()
            victim.kill()
    return acknowledged


def read_yaml(path: Path) -> Body:
    loaded = YAML(typ="safe", pure=True).load(path.read_bytes())
    assert isinstance(loaded, dict), path
    return loaded


async def assert_runs(running: Service, on_disk: dict[str, Body]) -> None:
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
        for workspace, saved in on_disk.items():
            answer = await http.post(f"/v2/functions/{workspace}/run/which", json={})
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"] == saved["note"]
