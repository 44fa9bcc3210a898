"""NpmInstaller: each workspace's npm packages in its own folder, installed all or nothing before a save.

npm runs in a staging folder (<root>/.npm-staging/<id>-<token>) seeded with the workspace's wanted
package.json and its previous package-lock.json, so packages already locked keep their versions. Only
when npm succeeded are package.json, package-lock.json and node_modules/ renamed into the workspace's
folder; the previous ones wait in the staging folder until the store has committed, and come back if it
did not. A second save of the same workspace waits for the first one's install and commit.

Instances sharing the storage folder install once per change: only a save installs (a run, or an instance
seeing a changed workspace.yaml, never does), under a per-workspace flock; a save that finds the wanted
packages in place (another instance's save, UPDATE_SCRIPTS_ON_STARTUP regenerating it) runs no npm.
"""

import asyncio
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import anyio
from anyio import to_thread

from adapters.npm.rules import PackageRules, refused_dependencies, wanted_packages
from domain.errors import DependencyError, Unavailable
from domain.model import Workspace, check_workspace_id

PACKAGE_FILES = ("package.json", "package-lock.json", "node_modules")
STAGING = ".npm-staging"
CACHE = ".npm-cache"
LOCKS = ".locks"
OUTPUT_TAIL = 2000  # characters of npm's output an error carries
# No install scripts (they would run arbitrary code as the service), no audit or funding calls, no log files.
NPM_FLAGS = (
    "--ignore-scripts",
    "--no-audit",
    "--no-fund",
    "--no-update-notifier",
    "--logs-max=0",
    "--loglevel=error",
    "--no-progress",
)
Wanted = dict[str, str]
NPM_NOISE = re.compile(r"npm (error|ERR!)( code \S+| \d{3})?")


class NpmInstaller:
    """Installs each workspace's npm packages into <root>/<id>/ with the machine's npm, all or nothing."""

    def __init__(
        self,
        *,
        root: Path | str,
        timeout_s: float,
        rules: PackageRules | None = None,
        registry: str | None = None,
        environment: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        shared_modules_dir: Path | str | None = None,
        max_parallel: int = 3,
        npm_binary: str = "npm",
    ) -> None:
        self.root = Path(root)
        self.timeout_s = timeout_s
        self.rules = rules or PackageRules()
        self.registry = registry
        self.environment = _with_path(dict(environment))
        self.shared = Path(shared_modules_dir) / "node_modules" if shared_modules_dir else None
        self.npm_binary = shutil.which(npm_binary) or npm_binary  # the service's PATH, not npm's
        self._slots = anyio.Semaphore(max_parallel)  # npm is CPU- and disk-heavy: a few at a time
        self._locks: weakref.WeakValueDictionary[str, anyio.Lock] = weakref.WeakValueDictionary()
        self._counts: Counter[str] = Counter()

    @asynccontextmanager
    async def installing(self, workspace: Workspace) -> AsyncIterator[None]:
        """Install, swap in, run the block (the store's commit); put the previous packages back on error."""
        try:
            wanted = wanted_packages(workspace, self.rules, self._is_shared)
        except DependencyError:
            self._counts["refused"] += 1
            raise
        async with self._lock(workspace.id):
            folder = self.folder(workspace.id)
            if not wanted and not os.path.lexists(folder / "package.json"):
                yield  # the common case: no packages before, none now; no disk touched
                return
            async with self._file_lock(workspace.id):
                swap = await self._prepare(workspace.id, wanted)
                if swap is None:
                    yield
                    return
                try:
                    yield
                except BaseException:
                    await to_thread.run_sync(swap.undo)
                    raise
                await to_thread.run_sync(swap.discard)

    @asynccontextmanager
    async def removing(self, workspace_id: str) -> AsyncIterator[None]:
        """Serialize with installs; after the block deleted the workspace, remove its packages."""
        async with self._lock(workspace_id), self._file_lock(workspace_id):
            yield
            await to_thread.run_sync(self._remove_sync, workspace_id)

    def stats(self) -> Mapping[str, int]:
        return dict(self._counts)

    def folder(self, workspace_id: str) -> Path:
        return self.root / check_workspace_id(workspace_id)

    # -- one install ------------------------------------------------------------------------------

    async def _prepare(self, workspace_id: str, wanted: Wanted) -> "Swap | None":
        """The swap that puts the wanted packages in place, or None when they are there already."""
        folder = self.folder(workspace_id)
        unchanged = bool(wanted) and await to_thread.run_sync(_installed, folder, wanted)
        if unchanged:
            self._counts["unchanged"] += 1
            return None
        try:
            staging = await to_thread.run_sync(self._new_staging, workspace_id, wanted, folder)
        except OSError as exc:  # a full or read-only disk
            raise Unavailable(
                f"storage failed while installing the packages of {workspace_id!r}: {exc}"
            ) from exc
        try:
            if wanted:
                await self._install(staging, wanted)
            swap = Swap(folder, staging)
            await to_thread.run_sync(swap.apply)
        except BaseException as exc:
            await to_thread.run_sync(lambda: shutil.rmtree(staging, ignore_errors=True))
            if isinstance(exc, OSError):
                raise Unavailable(
                    f"storage failed while installing the packages of {workspace_id!r}: {exc}"
                ) from exc
            raise
        return swap

    async def _install(self, staging: Path, wanted: Wanted) -> None:
        async with self._slots:
            code, output = await self._npm(staging)
        if code != 0:
            self._counts["failed"] += 1
            if "ENOSPC" in output:  # npm's own writes hit a full disk: the storage failed, not the package
                raise Unavailable(
                    f"storage failed while npm installed {', '.join(sorted(wanted))}: disk full"
                )
            raise self._failure(wanted, code, output)
        try:
            await to_thread.run_sync(_check_installed, staging, wanted, self.rules)
        except DependencyError:
            self._counts["refused"] += 1
            raise
        self._counts["installed"] += 1

    async def _npm(self, staging: Path) -> tuple[int | None, str]:
        """npm's exit code (None: it ran out of time) and its output."""
        args = [self.npm_binary, "install", *NPM_FLAGS, f"--cache={self.root.resolve() / CACHE}"]
        if self.registry:
            args.append(f"--registry={self.registry}")
        try:
            process = await self._start_npm(args, staging)
        except FileNotFoundError:
            raise Unavailable(
                f"no {self.npm_binary!r} found: installing npm packages needs Node.js's npm"
            ) from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout_s)
            return process.returncode, output.decode(errors="replace")
        except TimeoutError:
            return None, ""
        finally:
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()

    async def _start_npm(self, args: list[str], staging: Path) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *args,
            cwd=staging,
            env=self.environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout stops everything npm started
        )

    def _failure(self, wanted: Wanted, code: int | None, output: str) -> DependencyError:
        specs = ", ".join(f"{name}@{spec}" for name, spec in sorted(wanted.items()))
        if code is None:
            return DependencyError(
                f"npm install of {specs} did not finish within NPM_INSTALL_TIMEOUT ({self.timeout_s:g} s)",
                packages=sorted(wanted),
            )
        # The storage path is nobody's business outside the service.
        tail = output.replace(str(self.root.resolve()), "<storage>")[-OUTPUT_TAIL:].strip()
        named = [name for name in sorted(wanted) if name in tail] or sorted(wanted)
        return DependencyError(
            f"npm could not install {', '.join(named)} ({specs}): {_summary(tail) or f'exit code {code}'}",
            package=named[0],
            packages=named,
            output=tail,
        )

    # -- files ------------------------------------------------------------------------------------

    def _new_staging(self, workspace_id: str, wanted: Wanted, folder: Path) -> Path:
        self._clean_staging(workspace_id)
        staging = self.root / STAGING / f"{workspace_id}-{secrets.token_hex(4)}"
        os.makedirs(staging)
        if wanted:
            manifest = {"name": "functions-workspace", "private": True, "dependencies": wanted}
            (staging / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
            with suppress(FileNotFoundError):  # the previous lock keeps the versions already chosen
                shutil.copyfile(folder / "package-lock.json", staging / "package-lock.json")
        return staging

    def _clean_staging(self, workspace_id: str) -> None:
        """Remove what installs of this workspace that died left behind: we hold its locks."""
        with suppress(FileNotFoundError), os.scandir(self.root / STAGING) as entries:
            for entry in entries:
                prefix, _, token = entry.name.rpartition("-")
                if prefix == workspace_id and len(token) == 8:
                    shutil.rmtree(entry.path, ignore_errors=True)

    def _remove_sync(self, workspace_id: str) -> None:
        self._clean_staging(workspace_id)
        folder = self.folder(workspace_id)
        for name in PACKAGE_FILES:
            _remove(folder / name)
        with suppress(OSError):  # only if nothing else lives there
            folder.rmdir()

    def _is_shared(self, name: str) -> bool:
        return self.shared is not None and (self.shared / name / "package.json").is_file()

    def _lock(self, workspace_id: str) -> anyio.Lock:
        lock = self._locks.get(workspace_id)  # weak: a lock lives while someone holds or awaits it
        if lock is None:
            lock = self._locks[workspace_id] = anyio.Lock()
        return lock

    @asynccontextmanager
    async def _file_lock(self, workspace_id: str) -> AsyncIterator[None]:
        """Serializes installs of one workspace across service instances sharing the storage folder."""
        with _opened_lock_file(self.root / LOCKS / f"{workspace_id}.npm.lock") as fd:
            await to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)  # released when fd closes
            yield


class Swap:
    """Moves a staging folder's package files into a workspace folder, keeping the previous ones to undo."""

    def __init__(self, folder: Path, staging: Path) -> None:
        self.folder, self.staging, self.previous = folder, staging, staging / ".previous"
        self.created_folder = False
        self.saved: list[str] = []
        self.placed: list[str] = []

    def apply(self) -> None:
        try:
            self.created_folder = not self.folder.is_dir()
            os.makedirs(self.folder, exist_ok=True)
            os.makedirs(self.previous)
            for name in PACKAGE_FILES:
                if os.path.lexists(self.folder / name):
                    os.rename(self.folder / name, self.previous / name)
                    self.saved.append(name)
            for name in PACKAGE_FILES:
                if os.path.lexists(self.staging / name):
                    os.rename(self.staging / name, self.folder / name)
                    self.placed.append(name)
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        """Put the previous package files back; the new ones go."""
        for name in self.placed:
            _remove(self.folder / name)
        for name in self.saved:
            os.rename(self.previous / name, self.folder / name)
        if self.created_folder:
            with suppress(OSError):
                self.folder.rmdir()
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _installed(folder: Path, wanted: Wanted) -> bool:
    """Whether the folder holds exactly these dependencies, installed (by an earlier save)."""
    try:
        manifest = json.loads((folder / "package.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("dependencies") != wanted:
        return False
    return all((folder / "node_modules" / name / "package.json").is_file() for name in wanted)


def _check_installed(staging: Path, wanted: Wanted, rules: PackageRules) -> None:
    try:
        lock = json.loads((staging / "package-lock.json").read_text())
        paths = lock.get("packages", {})
    except (OSError, ValueError, AttributeError):
        paths = {}
    refused_dependencies(rules, {path.rpartition("node_modules/")[2] for path in paths if path})
    missing = [name for name in wanted if not (staging / "node_modules" / name / "package.json").is_file()]
    if missing:
        raise DependencyError(f"npm finished but did not install {', '.join(missing)}", package=missing[0])


def _summary(output: str) -> str:
    """npm's first telling error line: not `npm error code E404`, a bare `npm error 404` or a note on logs."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = [line for line in lines if not NPM_NOISE.fullmatch(line) and "Log files" not in line]
    return (telling or lines or [""])[0]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            os.unlink(path)


@contextmanager
def _opened_lock_file(path: Path) -> Iterator[int]:
    os.makedirs(path.parent, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def _with_path(environment: dict[str, str]) -> dict[str, str]:
    """npm is a Node script (`#!/usr/bin/env node`): with no PATH in the settings, it gets node's folder."""
    if "PATH" not in environment:
        node = shutil.which("node")
        folders = [os.path.dirname(node)] if node else []
        environment["PATH"] = os.pathsep.join([*folders, *os.defpath.split(os.pathsep)])
    return environment
