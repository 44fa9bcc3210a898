"""The use cases: what HTTP, the CLI and embedders call. Domain types in and out, ports passed in."""

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Protocol, runtime_checkable

from domain.errors import DomainError, NotFound, StaleCode, Unavailable
from domain.model import Json, Language, Outcome, Workspace, check_function_name, check_workspace_id
from domain.parameters import bind_parameters
from ports.packages import PackageInstaller
from ports.runtime import Runtime
from ports.storage import WorkspaceStore

REGENERATED = "ok"
CURRENT = "current"  # made from this body by this generator already: by another replica, or an earlier start


@runtime_checkable
class SharedStore(Protocol):
    """A store that service instances may share (the filesystem's): what regenerating once needs."""

    def regenerating(self, workspace_id: str) -> AbstractAsyncContextManager[None]:
        """Held by one process at a time per workspace, across processes."""
        ...

    async def made_from(self, workspace_id: str) -> str | None:
        """The stamp recorded when the generated files were last regenerated (None: none, or files gone)."""
        ...

    async def record_made_from(self, workspace_id: str, stamp: str) -> None: ...


class Workspaces:
    """Save, read, delete, list and run workspaces."""

    def __init__(
        self,
        store: WorkspaceStore,
        runtimes: Mapping[Language, Runtime],
        packages: PackageInstaller | None = None,  # None: no packages are installed (required names fail)
    ) -> None:
        self._store = store
        self._runtimes = dict(runtimes)
        self._packages = packages

    def runtime(self, language: Language) -> Runtime:
        try:
            return self._runtimes[language]
        except KeyError:
            raise Unavailable(f"the {language.value} runtime is not enabled in this service") from None

    @property
    def runtimes(self) -> Mapping[Language, Runtime]:
        return self._runtimes

    async def save(self, workspace: Workspace) -> Workspace:
        """Compile, install packages, then store: a compile or dependency error leaves the previous version
        (and its packages) in place."""
        generated: dict[str, str] = {}
        for language in sorted(workspace.languages()):
            generated.update(await self.runtime(language).prepare(workspace))
        async with self._installing(workspace):  # DependencyError before anything changed
            saved = await self._store.save(workspace, generated)
        await self._evict(workspace.id)  # the next run loads the new code
        return saved

    async def get(self, workspace_id: str) -> Workspace:
        return await self._store.get(check_workspace_id(workspace_id))

    async def delete(self, workspace_id: str) -> None:
        check_workspace_id(workspace_id)
        async with self._removing(workspace_id):  # its packages go with it
            await self._store.delete(workspace_id)
        await self._evict(workspace_id)

    async def list(self) -> list[str]:
        return await self._store.list()

    async def run(self, workspace_id: str, function: str, params: Json = None) -> Outcome:
        check_function_name(function)
        try:
            workspace = await self.get(workspace_id)
        except NotFound:
            # Deleted, perhaps through another instance sharing the storage: its worker here goes now,
            # not when it idles out.
            await self._evict(workspace_id)
            raise
        fn = workspace.function(function)
        bound = bind_parameters(fn, params)
        try:
            return await self.runtime(fn.runs_on).run(workspace, function, bound)
        except StaleCode:
            # A save landed between this run's read and its start: it runs the stored version, once.
            workspace = await self.get(workspace_id)
            fn = workspace.function(function)
            return await self.runtime(fn.runs_on).run(workspace, function, bind_parameters(fn, params))

    async def regenerate_all(self, generator: str | None = None) -> dict[str, str]:
        """Rewrite every workspace's generated files from its saved body (UPDATE_SCRIPTS_ON_STARTUP).

        One workspace that no longer compiles must not keep the others (or the service) from starting:
        the answer maps each workspace id to "ok" (regenerated), "current" (skipped) or why it was left
        as it was. A workspace deleted meanwhile is left out.

        Instances sharing a store start together and would each regenerate (and install) everything:
        with a `generator` (which code generates the scripts, e.g. a digest of its sources) and a
        SharedStore, each workspace is regenerated under a cross-process lock and stamped with
        "<revision> <generator>"; whoever finds the stamp current, the files there, skips it. A save
        through the API leaves the stamp stale, so the next start regenerates that workspace once more.
        """
        report: dict[str, str] = {}
        for workspace_id in await self._store.list():
            try:
                report[workspace_id] = await self._regenerate(workspace_id, generator)
            except NotFound:
                continue
            except DomainError as exc:
                report[workspace_id] = exc.message
        return report

    async def _regenerate(self, workspace_id: str, generator: str | None) -> str:
        store = self._store
        if generator is None or not isinstance(store, SharedStore):
            await self.save(await store.get(workspace_id))
            return REGENERATED
        async with store.regenerating(workspace_id):
            workspace = await store.get(workspace_id)  # read under the lock: the newest save
            if await store.made_from(workspace_id) == _stamp(workspace.revision, generator):
                return CURRENT
            saved = await self.save(workspace)
            await store.record_made_from(workspace_id, _stamp(saved.revision, generator))
            return REGENERATED

    def _installing(self, workspace: Workspace) -> AbstractAsyncContextManager[None]:
        return self._packages.installing(workspace) if self._packages else nullcontext()

    def _removing(self, workspace_id: str) -> AbstractAsyncContextManager[None]:
        return self._packages.removing(workspace_id) if self._packages else nullcontext()

    async def _evict(self, workspace_id: str) -> None:
        for runtime in self._runtimes.values():
            await runtime.evict(workspace_id)


def _stamp(revision: str | None, generator: str) -> str:
    return f"{revision} {generator}"
