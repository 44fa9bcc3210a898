"""The embedding API (entrypoints/embed.py): the service in-process, its readiness and its graceful stop."""

from collections.abc import Mapping

import anyio
import pytest

from domain.errors import InvalidRequest, NotFound, Unavailable
from domain.model import Json, Outcome, Status
from entrypoints.embed import Service, open_service
from tests.e2e.services import body, container_with, scripted

pytestmark = pytest.mark.anyio


async def nap(params: Mapping[str, Json]) -> Json:
    await anyio.sleep(float(params["s"]))
    return "rested"


async def test_an_embedded_service_saves_gets_lists_runs_and_deletes() -> None:
    runtime = scripted()
    async with open_service(container=container_with(runtime)) as service:
        assert service.ready and runtime.started
        saved = await service.save("demo", {**body(up="shout"), "owner": "me"})
        assert saved == {**body(up="shout"), "owner": "me"}  # the body as sent, unknown keys kept
        assert await service.get("demo") == saved
        assert await service.list() == ["demo"]
        outcome = await service.run("demo", "up", {"word": "hey"})
        assert outcome.status is Status.SUCCEEDED and outcome.result == "HEY"
        await service.delete("demo")
        assert await service.list() == []
    assert runtime.closed and not service.ready


async def test_an_embedded_service_checks_like_the_http_api() -> None:
    async with open_service(container=container_with(scripted())) as service:
        with pytest.raises(InvalidRequest, match="workspace id"):
            await service.save("no spaces", body(up="shout"))
        with pytest.raises(InvalidRequest, match="functions"):
            await service.save("demo", {"nothing": 1})
        with pytest.raises(NotFound):
            await service.run("missing", "f")
        await service.save("demo", body(bad="boom"))
        failed = await service.run("demo", "bad")  # the function's own failure is data, not raised
        assert failed.status is Status.FAILED and failed.error == {"name": "ValueError", "message": "boom"}


async def test_runs_are_refused_before_the_service_is_ready_and_after_it_stops() -> None:
    container = container_with(scripted())
    async with open_service(container=container) as started:
        await started.save("demo", body(up="shout"))
        workspaces = started.workspaces
    not_yet = Service(workspaces)
    with pytest.raises(Unavailable, match="starting"):
        await not_yet.run("demo", "up")
    assert not_yet.health()["ready"] is False and not_yet.health()["state"] == "starting"
    with pytest.raises(Unavailable, match="stopped"):
        await started.run("demo", "up")


async def test_stopping_lets_a_run_in_flight_finish_and_refuses_new_ones() -> None:
    async with open_service(container=container_with(scripted(nap=nap))) as service:
        await service.save("demo", body(slow="nap"))
        outcomes: list[Outcome] = []
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: _run_into(outcomes, service, 0.3))
            await anyio.sleep(0.05)
            group.start_soon(service.stop, 5.0)
            await anyio.sleep(0.05)
            assert service.health()["state"] == "stopping"
            with pytest.raises(Unavailable, match="stopping"):
                await service.run("demo", "slow", {"s": 0})
        assert [o.result for o in outcomes] == ["rested"]


async def test_a_run_still_going_after_the_grace_period_is_cut_with_unavailable() -> None:
    async with open_service(container=container_with(scripted(nap=nap))) as service:
        await service.save("demo", body(slow="nap"))
        errors: list[Exception] = []

        async def run_long() -> None:
            try:
                await service.run("demo", "slow", {"s": 30})
            except Unavailable as exc:
                errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(run_long)
                await anyio.sleep(0.05)
                assert await service.stop(0.1) == 1
        assert "SHUTDOWN_GRACE_PERIOD" in str(errors[0])


async def _run_into(outcomes: list[Outcome], service: Service, seconds: float) -> None:
    outcomes.append(await service.run("demo", "slow", {"s": seconds}))
