"""FileSystemStore on a real disk: the file layout, other processes, bad input, full disks, crashes.

Faults are injected by swapping the `os` that fs_store sees for FaultyOs, which fails (or kills the
process at) the N-th call that changes the disk, for every N a save makes.
"""

import errno
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest

from adapters.storage import filesystem as fs_store
from adapters.storage.filesystem import FileSystemStore
from adapters.storage.yaml_body import BODY
from domain.body import body_from_workspace, workspace_from_body
from domain.errors import InvalidRequest, NotFound, Unavailable
from domain.model import Json, Workspace

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
STEPS = frozenset({"open", "write", "fsync", "replace", "rename", "unlink", "mkdir", "makedirs"})
CRASHED = 17  # the exit code of a child killed mid-save


class FaultyOs:
    """The os module as fs_store sees it, except that one disk-changing call fails: the `fail_at`-th
    (an int) or the first one of that name (a str)."""

    def __init__(self, fail_at: int | str, fail: Callable[[str, tuple[Any, ...]], None]) -> None:
        self.fail_at = fail_at
        self.fail = fail
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name not in STEPS:
            return real

        def step(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self._fails(name):
                self.fail(name, args)
            return real(*args, **kwargs)

        return step

    def _fails(self, name: str) -> bool:
        if isinstance(self.fail_at, str):
            return name == self.fail_at and self.calls.count(name) == 1
        return len(self.calls) == self.fail_at


def raise_errno(code: int, named: bool = False) -> Callable[[str, tuple[Any, ...]], None]:
    def fail(_name: str, args: tuple[Any, ...]) -> None:
        raise OSError(code, os.strerror(code), *(args[:1] if named else ()))

    return fail


def die(name: str, args: tuple[Any, ...]) -> None:
    """A crash: nothing of fs_store runs after it. A write gets half its bytes out first."""
    if name == "write":
        fd, data = args
        os.write(fd, bytes(data[: len(data) // 2]))
    os._exit(CRASHED)


class Version(NamedTuple):
    workspace: Workspace
    scripts: dict[str, str]


def workspace(code: str, **extras: Json) -> Workspace:
    return workspace_from_body("demo", {"functions": {"f": {"code": code}}, **extras})


JS = {"index.js": "// old js\n"}
BOTH = {"index.js": "// new js\n", "main.py": "# new py\n"}
OLD = Version(workspace("return 1;\n", x_old=True), JS)
SCENARIOS: dict[str, tuple[Version | None, Version]] = {
    "first save": (None, Version(workspace("return 2;\n", x_new="ü"), BOTH)),
    "more scripts": (OLD, Version(workspace("return 2;\n", x_new="ü"), BOTH)),
    "fewer scripts": (Version(OLD.workspace, BOTH), Version(workspace("return 2;\n"), JS)),
}


async def prepared(root: Path, old: Version | None) -> FileSystemStore:
    store = FileSystemStore(root)
    if old is not None:
        await store.save(*old)
    return store


async def steps_of_a_save(tmp_path: Path, scenario: str) -> int:
    old, new = SCENARIOS[scenario]
    store = await prepared(tmp_path / "count", old)
    counter = FaultyOs(0, raise_errno(errno.EIO))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fs_store, "os", counter)
        await store.save(*new)
    return len(counter.calls)


def leftovers(root: Path) -> list[str]:
    folders = [folder for folder in (root, root / "demo") if folder.is_dir()]
    return [name for folder in folders for name in os.listdir(folder) if name.startswith((".tmp", ".trash"))]


def scripts_on_disk(root: Path) -> dict[str, str]:
    folder = root / "demo"
    names = [name for name in ("index.js", "main.py") if (folder / name).exists()]
    return {name: (folder / name).read_text() for name in names}


async def version_on_disk(root: Path, old: Version | None, new: Version) -> Version | None:
    """What a fresh store reads: exactly the old or the new workspace (None: none), no torn script."""
    fresh = FileSystemStore(root)
    try:
        read: Workspace | None = await fresh.get("demo")
    except NotFound:
        read = None
    assert await fresh.list() == ([] if read is None else ["demo"])
    for name, text in scripts_on_disk(root).items():
        assert text in (v.scripts.get(name) for v in (old, new) if v is not None)
    found = [v for v in (old, new) if (v.workspace if v else None) == read]
    assert found, f"neither the old nor the new version: {read}"
    return found[-1]


async def test_workspace_yaml_is_readable_with_code_as_literal_blocks(tmp_path: Path) -> None:
    body = {
        "functions": {
            "hello": {"code": "const who = params.name;\nreturn `hi ${who}`;\n", "parameters": {"name": {}}},
            "twice": {"language": "python", "code": "def main(x):\n    return x * 2"},
        },
        "disableNpmRegistry": True,
    }
    await FileSystemStore(tmp_path).save(workspace_from_body("demo", body), {})
    assert (tmp_path / "demo" / BODY).read_text() == (
        "functions:\n"
        "  hello:\n"
        "    code: |\n"
        "      const who = params.name;\n"
        "      return `hi ${who}`;\n"
        "    parameters:\n"
        "      name: {}\n"
        "  twice:\n"
        "    code: |-\n"
        "      def main(x):\n"
        "          return x * 2\n"
        "    language: python\n"
        "disableNpmRegistry: true\n"
    )


LOOKALIKES = (
    "yes no on null ~ 2024-01-01 1e3 0x1F +1 .inf 12:30 #x - {a} [1] &a *a !t %p @x `b` | > --- ... ?"
)
TRICKY = [
    *LOOKALIKES.split(),  # plain text that YAML would read as something else unless quoted
    *("", " ", "- x", "a: b", "'q' \"d\"", "\\ back\\slash", "ｆｕｌｌ\uff5e", "\U0001f389 ünï 中文\n"),
    *("a\n", "a", "a\n\n", "\na", "  x\ny\n", "x\n  y", "tab\there\n", "trail \nspaces  \n", "\n", "\n\n"),
    *("x\n---\ny\n", "x\n...\n", "#!/usr/bin/env node\n"),
    *("cr\r\nlf", "nel\x85x", "ls\u2028ps\u2029", "nul\x00", "\ufeffbom", "\x7fdel"),  # need escapes
]


async def test_unknown_keys_and_unicode_and_tricky_text_round_trip_exactly(tmp_path: Path) -> None:
    body: dict[str, Json] = {
        "functions": {f"f{i}": {"code": s, "x-fn": {s: s}} for i, s in enumerate(TRICKY)},
        "dependencies": {"left-pad": "^1.3.0"},
        "x-strings": TRICKY,
        "x-keys": {s: [s, {s: None}] for s in TRICKY if s},
        "x-values": [0, -1, 2**70, 1.5, 1e20, 1e-7, True, False, None, [], {}, [[{}]]],
    }
    await FileSystemStore(tmp_path).save(workspace_from_body("demo", body), {})
    assert body_from_workspace(await FileSystemStore(tmp_path).get("demo")) == body


async def test_generated_files_are_written_and_stale_ones_removed_but_other_files_kept(
    tmp_path: Path,
) -> None:
    store = FileSystemStore(tmp_path)
    await store.save(OLD.workspace, BOTH)
    folder = store.folder("demo")
    (folder / "node_modules" / "x").mkdir(parents=True)
    (folder / "node_modules" / "x" / "index.js").write_text("module.exports = 1;\n")
    (folder / "package.json").write_text("{}\n")
    await store.save(OLD.workspace, JS)
    assert scripts_on_disk(tmp_path) == JS
    assert (folder / "node_modules" / "x" / "index.js").read_text() == "module.exports = 1;\n"
    assert (folder / "package.json").read_text() == "{}\n"
    await store.save(OLD.workspace, {})
    assert scripts_on_disk(tmp_path) == {} and (folder / "package.json").exists()


async def test_a_second_store_on_the_same_root_sees_the_saves_of_the_first(tmp_path: Path) -> None:
    first, second = FileSystemStore(tmp_path), FileSystemStore(tmp_path)
    await first.save(workspace("one"), {})
    before = await second.get("demo")
    # A cache hit: one os.stat in a worker thread, no read. Measured with timeit on a 2-CPU box:
    # ~75 us per get(), of which ~65 us is the anyio.to_thread hop and ~11 us the stat and lookup;
    # a miss (read and parse a 20-function workspace.yaml) takes ~8 ms.
    assert await second.get("demo") is before
    saved = await first.save(workspace("two"), {})  # same size: the new inode tells them apart
    after = await second.get("demo")
    assert after == workspace("two") and after.revision == saved.revision != before.revision
    await first.delete("demo")
    with pytest.raises(NotFound):
        await second.get("demo")


async def test_two_stores_on_one_root_serialize_saves_through_the_file_lock(tmp_path: Path) -> None:
    stores = [FileSystemStore(tmp_path), FileSystemStore(tmp_path)]
    versions = [Version(workspace(f"return {n};"), {"index.js": f"// {n}\n"}) for n in range(16)]
    async with anyio.create_task_group() as tg:
        for n, version in enumerate(versions):
            tg.start_soon(stores[n % 2].save, *version)
    final = await FileSystemStore(tmp_path).get("demo")
    assert Version(final, scripts_on_disk(tmp_path)) in versions


@pytest.mark.parametrize(
    "bad", ["../etc", "a/b", "/abs", "..", ".", ".hidden", "", "a\x00b", "-x", "x" * 129]
)
async def test_invalid_ids_are_invalid_requests_that_never_touch_the_disk(tmp_path: Path, bad: str) -> None:
    store = FileSystemStore(tmp_path / "root")
    sneaky = workspace("x")
    object.__setattr__(sneaky, "id", bad)  # past the model's own check, to test the store's
    for call in (store.get(bad), store.delete(bad), store.save(sneaky, {})):
        with pytest.raises(InvalidRequest):
            await call
    with pytest.raises(InvalidRequest):
        store.folder(bad)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"functions: [unclosed\n",
        b"- a\n- list\n",
        b"functions:\n  f:\n    code: 1\n",
        b"",
        b"x: \xff\n",
        b"\x00",
    ],
)
async def test_a_corrupt_workspace_yaml_is_unavailable_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    store = FileSystemStore(tmp_path)
    await store.save(OLD.workspace, {})
    (tmp_path / "demo" / BODY).write_bytes(content)
    with pytest.raises(Unavailable, match="demo/workspace.yaml"):
        await store.get("demo")
    await store.save(OLD.workspace, {})  # a save repairs it
    assert await store.get("demo") == OLD.workspace


@pytest.mark.parametrize(
    ("call", "code"),
    [("write", errno.ENOSPC), ("fsync", errno.EIO), ("open", errno.EACCES), ("makedirs", errno.EROFS)],
)
async def test_a_failing_disk_is_unavailable_and_keeps_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    store = await prepared(tmp_path, OLD)
    monkeypatch.setattr(fs_store, "os", FaultyOs(call, raise_errno(code)))
    with pytest.raises(
        Unavailable, match=f"^storage failed while saving workspace 'demo': {os.strerror(code)}"
    ):
        await store.save(*SCENARIOS["more scripts"][1])
    monkeypatch.undo()
    assert await version_on_disk(tmp_path, OLD, SCENARIOS["more scripts"][1]) == OLD
    assert scripts_on_disk(tmp_path) == OLD.scripts and leftovers(tmp_path) == []


async def test_a_storage_error_names_the_file_inside_the_root_but_not_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await prepared(tmp_path, OLD)
    monkeypatch.setattr(fs_store, "os", FaultyOs("open", raise_errno(errno.EACCES, named=True)))
    with pytest.raises(Unavailable) as failure:
        await store.save(*OLD)
    assert str(failure.value).endswith("Permission denied (.locks/demo.lock)")
    assert str(tmp_path) not in str(failure.value)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_a_save_failing_at_any_step_leaves_the_old_version_or_returns_the_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    old, new = SCENARIOS[scenario]
    for n in range(1, await steps_of_a_save(tmp_path, scenario) + 2):
        store = await prepared(tmp_path / str(n), old)
        monkeypatch.setattr(fs_store, "os", FaultyOs(n, raise_errno(errno.EIO)))
        expected: Version | None = new
        try:
            await store.save(*new)
        except Unavailable:
            expected = old
        monkeypatch.undo()
        root = tmp_path / str(n)
        assert await version_on_disk(root, old, new) == expected, f"failed at step {n}"
        assert leftovers(root) == [], f"failed at step {n}"
        if expected is new:  # only a stale script may stay, when removing it failed after the commit
            assert new.scripts.items() <= scripts_on_disk(root).items(), f"failed at step {n}"
        await store.save(*new)
        assert scripts_on_disk(root) == new.scripts, f"failed at step {n}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the crash driver forks")
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_a_save_interrupted_at_any_step_leaves_old_or_new(tmp_path: Path, scenario: str) -> None:
    old, new = SCENARIOS[scenario]
    steps = await steps_of_a_save(tmp_path, scenario)
    roots = [tmp_path / str(n) for n in range(1, steps + 2)]
    for root in roots:
        await prepared(root, old)
    spec = json.dumps({"scenario": scenario, "roots": [str(root) for root in roots]})
    driver = [sys.executable, "-c", "from tests.unit.test_fs_store import crash_driver; crash_driver()"]
    done = subprocess.run(
        driver, input=spec, capture_output=True, text=True, cwd=REPO, check=True, timeout=60
    )
    assert json.loads(done.stdout) == [CRASHED] * steps + [0], done.stderr
    for n, root in enumerate(roots, start=1):
        assert await version_on_disk(root, old, new) in (old, new), f"crashed at step {n}"
        await FileSystemStore(root).save(*new)  # the next save clears what the crash left
        assert leftovers(root) == [] and scripts_on_disk(root) == new.scripts, f"crashed at step {n}"


def crash_driver() -> None:
    """In a subprocess: for each root, fork a child that dies at the N-th step of a save (N = 1, 2…)."""
    spec = json.load(sys.stdin)
    new = SCENARIOS[spec["scenario"]][1]
    codes = []
    for n, root in enumerate(spec["roots"], start=1):
        pid = os.fork()
        if pid == 0:
            try:
                pytest.MonkeyPatch().setattr(fs_store, "os", FaultyOs(n, die))
                anyio.run(FileSystemStore(root).save, *new)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)  # a save that ran every step
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    print(json.dumps(codes))
