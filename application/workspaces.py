"""The use cases: what HTTP, the CLI and embedders call. Domain types in and out, ports passed in."""

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext

from domain.errors import DomainError, Unavailable
from domain.model import Json, Language, Outcome, Workspace, check_function_name, check_workspace_id
from domain.parameters import bind_parameters
from ports.packages import PackageInstaller
from ports.runtime import Runtime
from ports.storage import WorkspaceStore


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
        workspace = await self.get(workspace_id)
        fn = workspace.function(function)
        bound = bind_parameters(fn, params)
        return await self.runtime(fn.runs_on).run(workspace, function, bound)

    async def regenerate_all(self) -> dict[str, str]:
        """Rewrite every workspace's generated files from its saved body (UPDATE_SCRIPTS_ON_STARTUP).

        One workspace that no longer compiles must not keep the others (or the service) from starting:
        the answer maps each workspace id to "ok" or to why it was left as it was.
        """
        report: dict[str, str] = {}
        for workspace_id in await self._store.list():
            try:
                await self.save(await self._store.get(workspace_id))
                report[workspace_id] = "ok"
            except DomainError as exc:
                report[workspace_id] = exc.message
        return report

    def _installing(self, workspace: Workspace) -> AbstractAsyncContextManager[None]:
        return self._packages.installing(workspace) if self._packages else nullcontext()

    def _removing(self, workspace_id: str) -> AbstractAsyncContextManager[None]:
        return self._packages.removing(workspace_id) if self._packages else nullcontext()

    async def _evict(self, workspace_id: str) -> None:
        for runtime in self._runtimes.values():
            await runtime.evict(workspace_id)
