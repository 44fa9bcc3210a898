"""Instances sharing one storage folder: each workspace regenerated once, a deleted one's worker evicted."""

from pathlib import Path

import anyio
import pytest

from adapters.storage.filesystem import MADE_FROM, FileSystemStore
from application.workspaces import CURRENT, REGENERATED, Workspaces
from domain.errors import NotFound
from domain.model import Function, Language, Workspace
from tests.fakes import PROGRAMS, ScriptedRuntime

pytestmark = pytest.mark.anyio


def replica(root: Path) -> tuple[Workspaces, ScriptedRuntime]:
    """An instance of its own (its own store object, cache and runtime) on the shared folder."""
    runtime = ScriptedRuntime(programs=dict(PROGRAMS))
    return Workspaces(FileSystemStore(root), {Language.NODEJS: runtime}), runtime


def echoing(workspace_id: str) -> Workspace:
    return Workspace(workspace_id, {"echo": Function("echo")})


async def test_replicas_regenerating_together_do_each_workspace_once(tmp_path: Path) -> None:
    first, _ = replica(tmp_path)
    for workspace_id in ("a", "b", "c"):
        await first.save(echoing(workspace_id))
    replicas = [replica(tmp_path) for _ in range(3)]
    reports: list[dict[str, str]] = []

    async def regenerate(workspaces: Workspaces) -> None:
        reports.append(await workspaces.regenerate_all("gen-1"))

    async with anyio.create_task_group() as group:
        for workspaces, _ in replicas:
            group.start_soon(regenerate, workspaces)
    for workspace_id in ("a", "b", "c"):
        outcomes = sorted(report[workspace_id] for report in reports)
        assert outcomes == sorted([REGENERATED, CURRENT, CURRENT])
        revision = (await first.get(workspace_id)).revision
        assert (tmp_path / workspace_id / MADE_FROM).read_text() == f"{revision} gen-1"
    assert sum(len(runtime.evicted) for _, runtime in replicas) == 3  # only the regenerations evicted


async def test_a_new_generator_a_save_or_a_missing_script_regenerates_again(tmp_path: Path) -> None:
    workspaces, _ = replica(tmp_path)
    await workspaces.save(echoing("a"))
    assert await workspaces.regenerate_all("gen-1") == {"a": REGENERATED}
    assert await workspaces.regenerate_all("gen-1") == {"a": CURRENT}
    assert await workspaces.regenerate_all("gen-2") == {"a": REGENERATED}  # an upgrade
    await workspaces.save(Workspace("a", {"echo": Function("echo"), "more": Function("echo")}))
    assert await workspaces.regenerate_all("gen-2") == {"a": REGENERATED}  # a save made the stamp stale
    (tmp_path / "a" / "scripted.txt").unlink()
    assert await workspaces.regenerate_all("gen-2") == {"a": REGENERATED}  # a generated file gone
    assert (tmp_path / "a" / "scripted.txt").is_file()


async def test_a_run_of_a_workspace_deleted_by_another_replica_evicts_it_here(tmp_path: Path) -> None:
    here, runtime = replica(tmp_path)
    there, _ = replica(tmp_path)
    await here.save(echoing("a"))
    await here.run("a", "echo", {"x": 1})
    runtime.evicted.clear()
    await there.delete("a")
    with pytest.raises(NotFound):
        await here.run("a", "echo", {"x": 1})
    assert runtime.evicted == ["a"]


async def test_recording_a_stamp_for_a_deleted_workspace_leaves_no_folder(tmp_path: Path) -> None:
    store = FileSystemStore(tmp_path)
    await store.record_made_from("gone", "r gen")
    assert not (tmp_path / "gone").exists() and await store.made_from("gone") is None
