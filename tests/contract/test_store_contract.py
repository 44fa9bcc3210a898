"""What every WorkspaceStore must do, run against each one (STORES): in memory and on disk."""

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from ruamel.yaml import YAML

from adapters.storage.filesystem import FileSystemStore
from adapters.storage.memory import InMemoryStore
from adapters.storage.yaml_body import BODY
from domain.body import body_from_workspace, workspace_from_body
from domain.errors import NotFound
from domain.model import Workspace
from ports.storage import WorkspaceStore

pytestmark = pytest.mark.anyio

STORES: dict[str, Callable[[Path], WorkspaceStore]] = {  # typed, so mypy checks each adapter
    "memory": lambda _tmp: InMemoryStore(),
    "filesystem": lambda tmp: FileSystemStore(tmp),
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> WorkspaceStore:
    return STORES[request.param](tmp_path)


def generated_files(store: WorkspaceStore, workspace_id: str) -> dict[str, str]:
    """The generated files a store kept: the one place this suite looks inside the adapters."""
    if isinstance(store, InMemoryStore):
        return store.generated[workspace_id]
    assert isinstance(store, FileSystemStore)
    files = (p for p in store.folder(workspace_id).iterdir() if p.is_file() and p.name != BODY)
    return {p.name: p.read_text() for p in files if not p.name.startswith(".")}


def version(n: int, workspace_id: str = "demo") -> Workspace:
    body = {
        "functions": {"f": {"code": f"return {n};\n" * (n % 3 + 1), "parameters": {"x": {"default": n}}}},
        "dependencies": {"lodash": f"^4.{n}.0"},
        "x-version": {"n": n, "tags": ["v"] * n},
    }
    return workspace_from_body(workspace_id, body)


def scripts(n: int) -> dict[str, str]:
    return {"index.js": f"// version {n}\n", "main.py": f"# version {n}\n"}


async def test_a_saved_workspace_reads_back_equal_with_its_revision(store: WorkspaceStore) -> None:
    saved = await store.save(version(1), scripts(1))
    read = await store.get("demo")
    assert saved == read == version(1)
    assert body_from_workspace(read) == body_from_workspace(version(1))
    assert read.revision == saved.revision != ""


async def test_each_save_with_new_content_gets_a_new_revision(store: WorkspaceStore) -> None:
    revisions = [(await store.save(version(n), scripts(n))).revision for n in range(4)]
    assert all(revisions) and len(set(revisions)) == 4
    assert (await store.get("demo")).revision == revisions[-1]


async def test_an_unknown_workspace_is_not_found(store: WorkspaceStore) -> None:
    with pytest.raises(NotFound):
        await store.get("nobody")


async def test_a_deleted_workspace_is_not_found_and_not_listed(store: WorkspaceStore) -> None:
    await store.save(version(1), scripts(1))
    await store.save(version(2, "other"), {})
    await store.delete("demo")
    with pytest.raises(NotFound):
        await store.get("demo")
    assert await store.list() == ["other"]


async def test_deleting_an_unknown_workspace_is_not_found(store: WorkspaceStore) -> None:
    with pytest.raises(NotFound):
        await store.delete("nobody")


async def test_list_gives_every_id_sorted(store: WorkspaceStore) -> None:
    assert await store.list() == []
    ids = ["b", "a.b", "A", "0", "a-b", "a_b", "a"]
    for n, workspace_id in enumerate(ids):
        await store.save(version(n, workspace_id), {})
    assert await store.list() == sorted(ids)


async def test_concurrent_saves_of_one_workspace_end_with_one_whole_version(store: WorkspaceStore) -> None:
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(store.save, version(n), scripts(n))
    final = await store.get("demo")
    n = next(n for n in range(20) if version(n) == final)  # StopIteration: a torn mix of versions
    assert generated_files(store, "demo") == scripts(n)
    if isinstance(store, FileSystemStore):
        on_disk = YAML(typ="safe", pure=True).load(store.folder("demo") / BODY)
        assert workspace_from_body("demo", on_disk) == final


async def test_a_new_save_replaces_the_generated_files(store: WorkspaceStore) -> None:
    await store.save(version(1), scripts(1))
    await store.save(version(2), {"index.js": "// only js now\n"})
    assert generated_files(store, "demo") == {"index.js": "// only js now\n"}
