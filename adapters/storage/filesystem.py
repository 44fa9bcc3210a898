"""FileSystemStore: <root>/<id>/workspace.yaml plus the generated scripts, written atomically.

workspace.yaml is the commit point: it is renamed into place after every other file of a save,
so a crash leaves the old or the new version. Scratch names start with a dot, which no workspace
id or generated name may, so nothing half-written is ever read as a workspace.
"""

import builtins
import fcntl
import os
import re
import secrets
import shutil
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import anyio
from anyio import to_thread
from attrs import evolve

from adapters.storage.yaml_body import BODY, dump_body, parse_body, revision_of
from domain.body import body_from_workspace
from domain.errors import NotFound, Unavailable
from domain.model import WORKSPACE_ID, Workspace, check_workspace_id

# The names the last saves wrote, so a save removes only its own stale scripts and never the
# package.json or node_modules/ that live next to them. A list rather than a fixed {"index.js",
# "main.py"} keeps the store ignorant of which runtime writes what.
MANIFEST = ".generated"
GENERATED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LOCKS = ".locks"
# What the generated files were last regenerated from ("<revision> <generator>", Workspaces.regenerate_all);
# inside the folder, so a delete takes it along.
MADE_FROM = ".made-from"
FileKey = tuple[int, int, int]  # st_mtime_ns, st_size, st_ino: os.replace always brings a new inode

_SCRATCH = re.compile(r"\.tmp-.+-[0-9a-f]{8}")
_TOKEN = re.compile(r"[0-9a-f]{8}")


class FileSystemStore:
    """Workspaces as folders under `root`: workspace.yaml (the source of truth) and generated scripts."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)  # created by the first save, so building the store touches no disk
        self._locks: weakref.WeakValueDictionary[str, anyio.Lock] = weakref.WeakValueDictionary()
        self._cache: dict[str, tuple[FileKey, Workspace]] = {}
        self._body_paths: dict[str, str] = {}

    def folder(self, workspace_id: str) -> Path:
        """The folder of a workspace's files (runtimes look for node_modules here)."""
        return self.root / check_workspace_id(workspace_id)

    async def save(self, workspace: Workspace, generated: Mapping[str, str]) -> Workspace:
        """Write the generated files, then workspace.yaml; return the workspace with its revision."""
        self.folder(workspace.id)
        files = {_check_generated_name(name): text.encode() for name, text in generated.items()}
        data = dump_body(body_from_workspace(workspace))
        saved = evolve(workspace, revision=revision_of(data))
        with self._storage_errors("saving", workspace.id):
            # The in-process lock keeps waiting saves off the thread pool; flock covers other processes.
            async with self._lock(workspace.id):
                await to_thread.run_sync(self._save_locked, saved, data, files)
        return saved

    async def get(self, workspace_id: str) -> Workspace:
        """The last saved version: one os.stat when it is cached, a read and parse when it changed."""
        # Every run starts here: a stat costs ~2 us, a hop to the thread pool ~65 us, so the cache is
        # checked on the event loop and only a changed file is read in a thread.
        cached = self._cache.get(workspace_id)  # only valid ids ever get in
        if cached is not None:
            with suppress(OSError):
                if cached[0] == _file_key(os.stat(self._body_path(workspace_id))):
                    return cached[1]
        self.folder(workspace_id)
        with self._storage_errors("reading", workspace_id):
            return await to_thread.run_sync(self._get_sync, workspace_id)

    async def delete(self, workspace_id: str) -> None:
        """Remove the workspace folder and everything in it."""
        self.folder(workspace_id)
        with self._storage_errors("deleting", workspace_id):
            async with self._lock(workspace_id):
                await to_thread.run_sync(self._delete_locked, workspace_id)

    async def list(self) -> list[str]:
        """The ids of the folders that hold a workspace.yaml, sorted."""
        with self._storage_errors("listing", None):
            return await to_thread.run_sync(self._list_sync)

    @asynccontextmanager
    async def regenerating(self, workspace_id: str) -> AsyncIterator[None]:
        """One process at a time regenerates a workspace. Its own lock file: a regeneration saves, and the
        save takes the workspace's lock (flock does not nest across two open files in one process)."""
        self.folder(workspace_id)
        with self._storage_errors("regenerating", workspace_id):
            fd = await to_thread.run_sync(_open_lock, self.root / LOCKS / f"{workspace_id}.regenerate.lock")
        try:
            await to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)  # the kernel drops it if we die
            yield
        finally:
            os.close(fd)

    async def made_from(self, workspace_id: str) -> str | None:
        """The stamp of the last regeneration, or None when there is none or a generated file is missing."""
        folder = self.folder(workspace_id)
        with self._storage_errors("reading", workspace_id):
            return await to_thread.run_sync(_made_from, folder)

    async def record_made_from(self, workspace_id: str, stamp: str) -> None:
        """Record what the generated files were made from; nothing if the workspace is gone meanwhile."""
        folder = self.folder(workspace_id)

        def record() -> None:
            with self._file_lock(workspace_id):  # a save's clean-up would take our scratch file
                if (folder / BODY).is_file():
                    _put(folder, MADE_FROM, stamp.encode())

        with self._storage_errors("saving", workspace_id):
            async with self._lock(workspace_id):
                await to_thread.run_sync(record)

    def _body_path(self, workspace_id: str) -> str:
        path = self._body_paths.get(workspace_id)
        if path is None:
            path = self._body_paths[workspace_id] = str(self.folder(workspace_id) / BODY)
        return path

    def _lock(self, workspace_id: str) -> anyio.Lock:
        lock = self._locks.get(workspace_id)  # weak: a lock lives while someone holds or awaits it
        if lock is None:
            lock = self._locks[workspace_id] = anyio.Lock()
        return lock

    @contextmanager
    def _file_lock(self, workspace_id: str) -> Iterator[None]:
        """Serializes saves and deletes of one workspace across processes sharing the root."""
        fd = _open_lock(self.root / LOCKS / f"{workspace_id}.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel drops it if this process dies
            yield
        finally:
            os.close(fd)

    def _save_locked(self, workspace: Workspace, data: bytes, files: Mapping[str, bytes]) -> None:
        with self._file_lock(workspace.id):
            self._clean_leftovers(workspace.id)
            folder = self.root / workspace.id
            if folder.is_dir():
                _save_in_place(folder, data, files)
            else:
                self._save_new(folder, data, files)
            with suppress(OSError):  # committed already: a cold cache only costs one read
                self._cache[workspace.id] = (_file_key(os.stat(folder / BODY)), workspace)

    def _save_new(self, folder: Path, data: bytes, files: Mapping[str, bytes]) -> None:
        """Build the folder under a scratch name and rename it: it appears whole or not at all."""
        scratch = self.root / f".tmp-{folder.name}-{secrets.token_hex(4)}"
        os.mkdir(scratch)
        try:
            _write_all(scratch, data, files, manifest=set(files) or None)
            _fsync_dir(scratch)
            # If something else created the folder meanwhile, this fails and a retry saves in place.
            os.rename(scratch, folder)  # the commit point
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        _after_commit(lambda: _fsync_dir(self.root))

    def _get_sync(self, workspace_id: str) -> Workspace:
        path = self.root / workspace_id / BODY
        try:
            key = _file_key(os.stat(path))
            cached = self._cache.get(workspace_id)
            if cached is not None and cached[0] == key:
                return cached[1]
            with open(path, "rb") as file:  # fstat: the key of exactly the bytes read
                key, data = _file_key(os.fstat(file.fileno())), file.read()
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(workspace_id, None)
            raise NotFound(f"workspace {workspace_id!r} not found") from None
        workspace = parse_body(workspace_id, data)
        self._cache[workspace_id] = (key, workspace)
        return workspace

    def _delete_locked(self, workspace_id: str) -> None:
        with self._file_lock(workspace_id):
            self._clean_leftovers(workspace_id)
            folder = self.root / workspace_id
            if not (folder / BODY).is_file():
                raise NotFound(f"workspace {workspace_id!r} not found")
            trash = self.root / f".trash-{workspace_id}-{secrets.token_hex(4)}"
            os.rename(folder, trash)  # gone at once, however long removing node_modules takes
            self._cache.pop(workspace_id, None)
            _after_commit(lambda: _fsync_dir(self.root))
            shutil.rmtree(trash, ignore_errors=True)  # what stays is removed by the next save or delete

    def _list_sync(self) -> builtins.list[str]:
        try:
            with os.scandir(self.root) as entries:
                names = [entry.name for entry in entries if WORKSPACE_ID.fullmatch(entry.name)]
        except FileNotFoundError:
            return []
        return sorted(name for name in names if (self.root / name / BODY).is_file())

    def _clean_leftovers(self, workspace_id: str) -> None:
        """Remove the scratch files of saves and deletes of this workspace that died: we hold its lock."""
        prefixes = (f".tmp-{workspace_id}-", f".trash-{workspace_id}-")
        for name in _names(self.root):
            prefix = next((p for p in prefixes if name.startswith(p)), None)
            if prefix is not None and _TOKEN.fullmatch(name[len(prefix) :]):  # not another id's
                shutil.rmtree(self.root / name, ignore_errors=True)
        folder = self.root / workspace_id
        for name in _names(folder):
            if _SCRATCH.fullmatch(name):
                with suppress(FileNotFoundError):
                    os.unlink(folder / name)

    @contextmanager
    def _storage_errors(self, doing: str, workspace_id: str | None) -> Iterator[None]:
        """OSError (disk full, read-only, permissions) -> Unavailable naming the cause and the file."""
        try:
            yield
        except OSError as exc:
            what = f"workspace {workspace_id!r}" if workspace_id else "workspaces"
            named = isinstance(exc.filename, str | bytes | os.PathLike)
            where = f" ({self._relative(os.fsdecode(exc.filename))})" if named else ""
            raise Unavailable(f"storage failed while {doing} {what}: {exc.strerror or exc}{where}") from exc

    def _relative(self, filename: str) -> str:
        """A path inside the root, without the root: error messages reach API clients."""
        path = Path(filename)
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else path.name


def _save_in_place(folder: Path, data: bytes, files: Mapping[str, bytes]) -> None:
    old = _read_manifest(folder)
    listed = old | set(files)  # every file is listed before it exists, so none is ever forgotten
    _write_all(folder, data, files, manifest=listed if listed != old else None)
    _after_commit(lambda: _fsync_dir(folder))
    stale = old - set(files)
    if stale:
        _after_commit(lambda: _remove_stale(folder, stale, set(files)))


def _write_all(folder: Path, data: bytes, files: Mapping[str, bytes], manifest: set[str] | None) -> None:
    """Stage every file (a full disk fails here, changing nothing), then rename: workspace.yaml last."""
    staged = {MANIFEST: _manifest(manifest)} if manifest is not None else {}
    staged.update(files)
    staged[BODY] = data
    scratches: dict[str, Path] = {}
    try:
        for name, content in staged.items():
            scratches[name] = _stage(folder, name, content)
        for name, scratch in scratches.items():
            if name == BODY:
                _fsync_dir(folder)  # the scripts' renames reach the disk before the commit's
            os.replace(scratch, folder / name)
    except BaseException:
        for scratch in scratches.values():
            with suppress(OSError):  # the renamed ones are gone already
                os.unlink(scratch)
        raise


def _remove_stale(folder: Path, stale: set[str], current: set[str]) -> None:
    for name in stale:
        with suppress(FileNotFoundError):
            os.unlink(folder / name)
    _put(folder, MANIFEST, _manifest(current))
    _fsync_dir(folder)


def _after_commit(step: Callable[[], None]) -> None:
    """Run a step after the commit point. The new version is visible by then, so failing the save
    would wrongly tell the caller the old one stays (and skip evicting the old code from the
    runtimes); a stale script is still listed in the manifest and goes with the next save."""
    with suppress(OSError):
        step()


def _put(folder: Path, name: str, data: bytes) -> None:
    scratch = _stage(folder, name, data)
    try:
        os.replace(scratch, folder / name)
    except BaseException:
        with suppress(OSError):
            os.unlink(scratch)
        raise


def _stage(folder: Path, name: str, data: bytes) -> Path:
    """A scratch copy of a file, written whole and fsync'd, for os.replace to put in place."""
    scratch = folder / f".tmp-{name}-{secrets.token_hex(4)}"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(scratch)
        if isinstance(exc, OSError) and exc.filename is None:
            # write and fsync name no file: the error names the one being saved, for the answer and the log
            raise OSError(exc.errno, exc.strerror, str(folder / name)) from exc
        raise
    finally:
        os.close(fd)
    return scratch


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    os.makedirs(path.parent, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _made_from(folder: Path) -> str | None:
    try:
        stamp = (folder / MADE_FROM).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    missing = any(not (folder / name).is_file() for name in _read_manifest(folder))
    return None if missing else stamp


def _read_manifest(folder: Path) -> set[str]:
    try:
        text = (folder / MANIFEST).read_text()
    except FileNotFoundError:
        return set()
    return {name for name in text.splitlines() if GENERATED_NAME.fullmatch(name) and name != BODY}


def _manifest(names: set[str]) -> bytes:
    return "".join(f"{name}\n" for name in sorted(names)).encode()


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _file_key(stat: os.stat_result) -> FileKey:
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _check_generated_name(name: str) -> str:
    """The runtimes name the generated files; a path or a dot-name there is a bug, not user input."""
    if not GENERATED_NAME.fullmatch(name) or name == BODY:
        raise ValueError(f"invalid generated file name {name!r}")
    return name
