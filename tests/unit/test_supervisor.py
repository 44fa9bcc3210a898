"""The one supervisor: residency (least recently used out, idle out) and a pool of hosts that restarts."""

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from adapters.hosts.process import HostProcess
from adapters.hosts.supervisor import Health, HostPool, Residency, Resident
from domain.errors import Unavailable


def residency(limit: int, idle_s: float = 3600.0) -> tuple[Residency[Resident], list[str]]:
    evicted: list[str] = []
    return Residency(limit, idle_s, lambda workspace_id, _: evicted.append(workspace_id)), evicted


def test_the_least_recently_used_go_first_down_to_the_limit() -> None:
    resident, evicted = residency(limit=2)
    for name in "abc":
        resident.admit(name, Resident(name, time.monotonic()))
    assert evicted == ["a"] and list(resident) == ["b", "c"]
    assert resident.get("b") is not None  # now the most recently used
    resident.admit("d", Resident("d", time.monotonic()))
    assert evicted == ["a", "c"] and list(resident) == ["b", "d"]


def test_one_with_a_run_in_flight_stays_even_over_the_limit() -> None:
    resident, evicted = residency(limit=1)
    busy = resident.admit("a", Resident("1", time.monotonic()))
    with resident.using(busy):
        resident.admit("b", Resident("1", time.monotonic()))
        assert evicted == [] and len(resident) == 2
    assert busy.in_flight == 0


def test_a_revision_that_is_not_the_resident_one_is_not_found() -> None:
    resident, _ = residency(limit=5)
    resident.admit("a", Resident("1", time.monotonic()))
    assert resident.get("a", "2") is None and resident.get("a", "1") is not None
    assert resident.forget("a") is not None and resident.get("a") is None


@pytest.mark.anyio
async def test_idle_workspaces_are_evicted_and_busy_ones_are_not() -> None:
    resident, evicted = residency(limit=5, idle_s=0.1)
    resident.admit("idle", Resident("1", time.monotonic()))
    busy = resident.admit("busy", Resident("1", time.monotonic()))
    busy.in_flight = 1
    task = asyncio.create_task(resident.evict_idle_forever())
    await asyncio.sleep(0.4)
    task.cancel()
    assert evicted == ["idle"] and list(resident) == ["busy"]


HOST = """
import json, sys
print(json.dumps({"type": "ready", "protocol": 1, "python": "x"}), flush=True)
sys.stdin.read()
"""


def launcher(fail_after: int | None = None) -> tuple[list[HostProcess], Callable[[], Awaitable[HostProcess]]]:
    started: list[HostProcess] = []

    async def launch() -> HostProcess:
        if fail_after is not None and len(started) >= fail_after:
            raise Unavailable("cannot start now")
        host = HostProcess([sys.executable, "-c", HOST], name="test")
        await host.start()
        started.append(host)
        return host

    return started, launch


@pytest.mark.anyio
async def test_a_dead_host_is_replaced_by_the_spare_at_once_and_a_new_spare_boots() -> None:
    started, launch = launcher()
    lost: list[HostProcess] = []
    pool = HostPool("test", launch, size=1, spare=True, on_lost=lost.append)
    await pool.start()
    try:
        first, spare = pool.hosts[0], pool.spare
        first.end("killed by the test")
        await asyncio.sleep(0.3)
        assert lost == [first] and pool.hosts[0] is spare and pool.restarts == 1
        assert pool.spare is not None and pool.spare not in (first, spare) and pool.state is Health.OK
        assert await pool.host() is spare
    finally:
        await pool.aclose()
    assert not any(host.alive for host in started)


@pytest.mark.anyio
async def test_a_host_that_cannot_start_leaves_the_pool_unavailable_saying_why() -> None:
    _, launch = launcher(fail_after=0)
    pool = HostPool("test", launch)
    await pool.start()
    assert pool.health() == {"status": "unavailable", "restarts": 0, "error": "cannot start now"}
    with pytest.raises(Unavailable, match="cannot start now"):
        await pool.host()


@pytest.mark.anyio
async def test_a_restart_that_fails_is_tried_again_with_back_off() -> None:
    started, launch = launcher(fail_after=1)
    pool = HostPool("test", launch, backoff_s=(0.05, 0.1))
    await pool.start()
    try:
        pool.hosts[0].end("killed by the test")
        await asyncio.sleep(0.3)
        assert pool.state is Health.RESTARTING and pool.error == "cannot start now"
        with pytest.raises(Unavailable, match="restarting"):
            await asyncio.wait_for(pool.host(), 30)
    finally:
        await pool.aclose()
