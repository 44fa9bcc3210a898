"""What every History must do (ports/history.py), run against each one: in memory, SQLite in a temporary
folder, and a real PostgreSQL this suite starts (tests/postgres.py). The tests on data shared between
instances and processes run on the two databases only."""

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from attrs import evolve

from adapters.history.memory import InMemoryHistory
from adapters.history.migrations import MIGRATIONS
from adapters.history.postgres import PostgresDatabase, PostgresHistory
from adapters.history.sql import SqlHistory
from adapters.history.sqlite import HISTORY_FILE, SqliteDatabase, SqliteHistory
from domain.errors import NotFound, Unavailable
from ports.history import History, RunRecord
from tests.postgres import PostgresServer, postgres_bin, start_postgres

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
Opener = Callable[[], History]  # a new instance on the same data at each call (memory: the one instance)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs PostgreSQL's initdb and postgres (Debian: apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)")
    server = start_postgres(bin_dir)
    yield server
    server.stop()


def make_opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if kind == "memory":
        memory = InMemoryHistory()
        return lambda: memory
    if kind == "sqlite":
        return lambda: SqliteHistory(tmp_path / HISTORY_FILE)
    url = request.getfixturevalue("postgres_server").create_database()
    return lambda: PostgresHistory(url)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return make_opener(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return make_opener(request.param, request, tmp_path)


@pytest.fixture
async def history(opener: Opener, anyio_backend: str) -> AsyncIterator[History]:
    opened = opener()
    await opened.start()
    yield opened
    await opened.aclose()


def record(n: int, status: str = "succeeded", *, function: str = "f", workspace: str = "demo") -> RunRecord:
    """Run n of a workspace: ids sort as n does, and never repeat across workspaces."""
    return RunRecord(f"{n:08d}-{workspace}", workspace, function, status, f"2025-01-01T00:00:{n % 60:02d}Z")


@asynccontextmanager
async def closing(*histories: History) -> AsyncIterator[None]:
    """Closes them however the test ends: a connection left open fails the run with a ResourceWarning."""
    try:
        yield
    finally:
        for history in histories:
            await history.aclose()


async def ids(
    history: History,
    workspace: str = "demo",
    *,
    function: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[str]:
    runs = await history.runs(workspace, function=function, status=status, limit=limit, before=before)
    return [run.id for run in runs]


# --- versions


async def test_versions_are_numbered_from_1_per_workspace(history: History) -> None:
    assert [await history.add_version("a", {"n": n}, ["f"], "2025-01-01T00:00:00Z") for n in range(3)] == [
        1,
        2,
        3,
    ]
    assert await history.add_version("b", {}, [], "2025-01-01T00:00:00Z") == 1
    assert await history.add_version("a", {}, [], "2025-01-01T00:00:00Z") == 4


async def test_versions_list_newest_first_without_bodies(history: History) -> None:
    for n in range(1, 4):
        await history.add_version("demo", {"big": "x" * 1000}, [f"f{n}", "g"], f"2025-01-0{n}T00:00:00Z")
    listed = await history.versions("demo")
    assert [(v.number, v.saved_at, list(v.functions), v.body) for v in listed] == [
        (3, "2025-01-03T00:00:00Z", ["f3", "g"], None),
        (2, "2025-01-02T00:00:00Z", ["f2", "g"], None),
        (1, "2025-01-01T00:00:00Z", ["f1", "g"], None),
    ]
    assert {v.workspace for v in listed} == {"demo"}
    assert await history.versions("unknown") == []


async def test_a_version_reads_back_exactly(history: History) -> None:
    body = {
        "functions": {"héllo": {"code": "return '日本語 🎉 \\n';\n", "parameters": {}}},
        "z-first": {"b": [1, 2.5, -0.0, 10**30, True, None, {}, [], [[{}]]], "a": ""},
        "control": 'nul \u0000 tab \t quote " backslash \\ lone surrogate \ud800',
        "empty": {},
    }
    number = await history.add_version("demo", body, ["héllo"], "2025-01-01T00:00:00Z")
    kept = await history.version("demo", number)
    assert kept.body == body
    assert list(kept.body) == list(body) and list(kept.body["z-first"]) == ["b", "a"]  # key order kept
    assert (kept.workspace, kept.number, list(kept.functions)) == ("demo", 1, ["héllo"])
    empties: list[object] = [{}, [], "", None]
    for empty in empties:
        n = await history.add_version("demo", empty, [], "2025-01-01T00:00:00Z")
        assert (await history.version("demo", n)).body == empty


async def test_a_version_not_kept_is_not_found(history: History) -> None:
    await history.add_version("demo", {}, [], "2025-01-01T00:00:00Z")
    for workspace, number in (("demo", 2), ("demo", 0), ("other", 1)):
        with pytest.raises(NotFound):
            await history.version(workspace, number)


async def test_keep_versions_drops_the_oldest_and_numbers_go_on(history: History) -> None:
    for _ in range(5):
        await history.add_version("demo", {}, [], "2025-01-01T00:00:00Z")
    await history.add_version("other", {}, [], "2025-01-01T00:00:00Z")
    await history.keep_versions("demo", 2)
    assert [v.number for v in await history.versions("demo")] == [5, 4]
    with pytest.raises(NotFound):
        await history.version("demo", 3)
    await history.keep_versions("demo", 10)  # more than there are: nothing to drop
    assert [v.number for v in await history.versions("demo")] == [5, 4]
    await history.keep_versions("demo", 0)
    assert await history.versions("demo") == []
    assert await history.add_version("demo", {}, [], "2025-01-01T00:00:00Z") == 6  # never given twice
    assert [v.number for v in await history.versions("other")] == [1]


# --- runs


async def test_record_runs_replaces_a_run_by_id(history: History) -> None:
    queued = record(1, "queued")
    await history.record_runs([queued])
    assert await history.run("demo", queued.id) == queued
    running = evolve(queued, status="running", started_at="2025-01-01T00:00:02Z")
    await history.record_runs([running])
    done = evolve(running, status="succeeded", result={"ok": [1]}, duration_ms=3.5)
    await history.record_runs([done])
    await history.record_runs([])
    assert await history.runs("demo") == [done]


async def test_a_run_reads_back_with_every_field(history: History) -> None:
    full = RunRecord(
        id="00000001-full",
        workspace="demo",
        function="héllo",
        status="failed",
        queued_at="2025-01-01T00:00:00.123456Z",
        version=7,
        started_at="2025-01-01T00:00:00.5Z",
        duration_ms=12.25,
        parameters={"name": "Ada 🎉", "nested": {"list": [1, None, {}]}},
        result=None,
        error={"type": "TypeError", "message": "x is \u0000 undefined", "line": 3},
        logs=({"level": "info", "message": "日本", "timestamp": "2025-01-01T00:00:00Z"},),
        cold=False,  # falsy, not absent
        is_async=True,
        notes=("logs cut to 1 MB",),
    )
    bare = record(2)
    await history.record_runs([full, bare])
    assert await history.run("demo", full.id) == full
    assert await history.run("demo", bare.id) == bare
    assert (bare.parameters, bare.cold, bare.logs, bare.notes, bare.is_async) == (None, None, (), (), False)


async def test_runs_come_newest_first_filtered_limited_and_paged(history: History) -> None:
    runs = [
        record(n, "failed" if n % 3 == 0 else "succeeded", function="f" if n % 2 else "g")
        for n in range(1, 13)
    ]
    await history.record_runs(runs[::-1][:6])  # in no particular order
    await history.record_runs(runs[:6])
    await history.record_runs([record(99, workspace="other")])
    newest_first = [r.id for r in reversed(runs)]
    assert await ids(history) == newest_first
    assert await ids(history, limit=5) == newest_first[:5]
    assert await ids(history, limit=5, before=newest_first[4]) == newest_first[5:10]
    assert await ids(history, before=runs[0].id) == []
    assert await ids(history, function="f") == [r.id for r in reversed(runs) if r.function == "f"]
    assert await ids(history, status="failed") == [r.id for r in reversed(runs) if r.status == "failed"]
    assert await ids(history, function="g", status="failed", limit=1) == [record(12).id]
    assert await ids(history, function="nope") == []
    assert await ids(history, "other") == [record(99, workspace="other").id]
    assert await ids(history, "unknown") == []


async def test_run_ids_compare_byte_by_byte_whatever_the_database_locale(history: History) -> None:
    run_ids = ["0_", "0-", "0a", "0A", "0Z"]  # a natural-language collation sorts them as written here
    await history.record_runs(
        [RunRecord(i, "demo", "f", "succeeded", "2025-01-01T00:00:00Z") for i in run_ids]
    )
    assert await ids(history) == ["0a", "0_", "0Z", "0A", "0-"]
    assert await ids(history, before="0_") == ["0Z", "0A", "0-"]
    await history.keep_runs("demo", 2)
    assert await ids(history) == ["0a", "0_"]


async def test_a_run_not_kept_is_not_found(history: History) -> None:
    await history.record_runs([record(1, workspace="other")])
    for run_id in ("nope", record(1, workspace="other").id):  # another workspace's run is not this one's
        with pytest.raises(NotFound):
            await history.run("demo", run_id)


async def test_keep_runs_drops_the_oldest_of_one_workspace(history: History) -> None:
    await history.record_runs([record(n) for n in range(1, 8)] + [record(1, workspace="other")])
    await history.keep_runs("demo", 3)
    assert await ids(history) == [record(n).id for n in (7, 6, 5)]
    await history.keep_runs("demo", 0)
    assert await ids(history) == []
    assert await ids(history, "other") == [record(1, workspace="other").id]


async def test_forget_workspace_drops_its_versions_and_runs_only(history: History) -> None:
    for workspace in ("demo", "other"):
        await history.add_version(workspace, {"w": workspace}, [], "2025-01-01T00:00:00Z")
        await history.record_runs([record(1, workspace=workspace)])
    await history.forget_workspace("demo")
    assert (await history.versions("demo"), await history.runs("demo")) == ([], [])
    assert [v.number for v in await history.versions("other")] == [1]
    assert await ids(history, "other") == [record(1, workspace="other").id]
    assert await history.add_version("demo", {}, [], "2025-01-01T00:00:00Z") == 1  # a new workspace
    await history.forget_workspace("never-was")


async def test_fail_unfinished_fails_queued_and_running_runs(history: History) -> None:
    statuses = ["queued", "running", "succeeded", "failed", "timed_out", "running"]
    await history.record_runs([record(n, s) for n, s in enumerate(statuses, 1)])
    await history.record_runs([record(1, "queued", workspace="other")])
    assert await history.fail_unfinished("the service stopped") == 4
    after = {r.id: r for r in await history.runs("demo")}
    for n, status in enumerate(statuses, 1):
        run = after[record(n).id]
        if status in ("queued", "running"):
            assert run.status == "failed"
            assert run.error["message"] == "the service stopped" and run.error["type"]
        else:
            assert (run.status, run.error) == (status, None)
    assert await history.fail_unfinished("again") == 0


# --- data shared between instances and processes (the databases only)


async def test_migrations_apply_once_across_starts_and_instances(shared_opener: Opener) -> None:
    first, second, third = shared_opener(), shared_opener(), shared_opener()
    async with closing(first, second, third):
        async with anyio.create_task_group() as group:
            group.start_soon(first.start)  # two replicas starting together
            group.start_soon(second.start)
        await _share_one_database(first, second, third)


async def _share_one_database(first: History, second: History, third: History) -> None:
    await first.start()  # again: nothing to do
    assert isinstance(first, SqlHistory)
    rows = await first.database.query("SELECT version FROM schema_version ORDER BY version")
    assert [row[0] for row in rows] == [m.version for m in MIGRATIONS]
    await first.add_version("demo", {"by": "first"}, ["f"], "2025-01-01T00:00:00Z")
    await first.record_runs([record(1, "running")])
    assert (await second.version("demo", 1)).body == {"by": "first"}
    assert await second.run("demo", record(1).id) == record(1, "running")
    await third.start()
    assert await third.add_version("demo", {}, [], "2025-01-01T00:00:00Z") == 2


WRITER = """
import sys, anyio
from adapters.history.memory import InMemoryHistory
from adapters.history.postgres import PostgresDatabase, PostgresHistory
from adapters.history.sqlite import SqliteHistory
from ports.history import RunRecord

async def main(target, tag, count):
    history = PostgresHistory(target) if target.startswith("postgresql") else SqliteHistory(target)
    await history.start()
    for n in range(count):
        number = await history.add_version("demo", {"tag": tag, "n": n}, ["f"], "2025-01-01T00:00:00Z")
        run = RunRecord(f"{number:08d}-{tag}", "demo", "f", "queued", "2025-01-01T00:00:00Z", version=number)
        await history.record_runs([run])
    await history.aclose()

anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


async def test_processes_writing_together_share_one_numbering(shared_opener: Opener) -> None:
    history = shared_opener()
    assert isinstance(history, SqlHistory)
    database = history.database
    assert isinstance(database, SqliteDatabase | PostgresDatabase)
    target = str(database.path) if isinstance(database, SqliteDatabase) else database.url
    count = 12
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def write(tag: str) -> None:
        done = await anyio.run_process(
            [sys.executable, "-c", WRITER, target, tag, str(count)], cwd=ROOT, env=env
        )
        assert done.returncode == 0, done.stderr.decode()

    async with anyio.create_task_group() as group:  # both start on a database not yet made
        group.start_soon(write, "a")
        group.start_soon(write, "b")
    async with closing(history):
        await history.start()
        await _check_numbering(history, count)


async def _check_numbering(history: History, count: int) -> None:
    numbers = [v.number for v in await history.versions("demo")]
    assert numbers == list(range(2 * count, 0, -1))
    bodies = [(await history.version("demo", n)).body for n in range(1, 2 * count + 1)]
    assert sorted((b["tag"], b["n"]) for b in bodies) == sorted((t, n) for t in "ab" for n in range(count))
    assert len(await history.runs("demo", limit=1000)) == 2 * count
    assert await history.fail_unfinished("stopped") == 2 * count


# --- an unusable database


async def test_sqlite_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    history = SqliteHistory(tmp_path / "file" / HISTORY_FILE)
    with pytest.raises(Unavailable, match="history database"):
        await history.start()
    with pytest.raises(Unavailable):
        await history.versions("demo")


async def test_postgres_out_of_reach_is_unavailable_naming_the_setting(tmp_path: Path) -> None:
    history = PostgresHistory(f"postgresql://user:s3cret@/db?host={tmp_path}/nowhere&connect_timeout=2")
    with pytest.raises(Unavailable, match="FUNCTIONS_DATABASE_URL") as raised:
        await history.start()
    assert "s3cret" not in str(raised.value)


async def test_postgres_comes_back_after_its_connection_is_cut(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    history, killer = PostgresHistory(url), PostgresHistory(url)
    async with closing(history, killer):
        await history.start()
        await killer.start()
        await _cut_and_reconnect(history, killer)


async def _cut_and_reconnect(history: PostgresHistory, killer: PostgresHistory) -> None:
    await history.add_version("demo", {}, [], "2025-01-01T00:00:00Z")
    await killer.database.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND datname = current_database()"
    )
    with pytest.raises(Unavailable, match="FUNCTIONS_DATABASE_URL"):
        await history.versions("demo")
    assert [v.number for v in await history.versions("demo")] == [1]  # connected again
