"""Saves and deletes go through the PackageInstaller port: packages first, the store's commit inside."""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import pytest
from attrs import define, field

from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.errors import DependencyError, NotFound, Unavailable
from domain.model import Function, Language, Workspace
from tests.fakes import PROGRAMS, ScriptedRuntime

pytestmark = pytest.mark.anyio


@define
class RecordingInstaller:
    """Keeps each workspace's "installed" packages in a dict; refuses the names in `refuse`."""

    refuse: set[str] = field(factory=set)
    installed: dict[str, frozenset[str]] = field(factory=dict)
    events: list[str] = field(factory=list)

    @asynccontextmanager
    async def installing(self, workspace: Workspace) -> AsyncIterator[None]:
        wanted = frozenset(workspace.dependencies or {})
        if refused := wanted & self.refuse:
            raise DependencyError(f"{sorted(refused)[0]} is refused", package=sorted(refused)[0])
        previous = self.installed.get(workspace.id)
        self.installed[workspace.id] = wanted
        self.events.append(f"installed {workspace.id}")
        try:
            yield
        except BaseException:
            self.events.append(f"undone {workspace.id}")
            if previous is None:
                del self.installed[workspace.id]
            else:
                self.installed[workspace.id] = previous
            raise

    @asynccontextmanager
    async def removing(self, workspace_id: str) -> AsyncIterator[None]:
        yield
        self.installed.pop(workspace_id, None)

    def stats(self) -> Mapping[str, int]:
        return {"installed": len(self.events)}


class BrokenStore(InMemoryStore):
    """Saves fail, as a full disk would."""

    async def save(self, workspace: Workspace, generated: Mapping[str, str]) -> Workspace:
        raise Unavailable("disk full")


def with_packages(*names: str) -> Workspace:
    return Workspace("demo", {"echo": Function("echo")}, dependencies=dict.fromkeys(names, "1.0.0"))


def service(store: InMemoryStore, installer: RecordingInstaller) -> Workspaces:
    return Workspaces(store, {Language.NODEJS: ScriptedRuntime(programs=dict(PROGRAMS))}, installer)


async def test_a_refused_package_keeps_the_previous_version_and_its_packages() -> None:
    installer = RecordingInstaller(refuse={"evil"})
    workspaces = service(InMemoryStore(), installer)
    await workspaces.save(with_packages("good"))
    with pytest.raises(DependencyError, match="evil"):
        await workspaces.save(with_packages("good", "evil"))
    assert await workspaces.get("demo") == with_packages("good")
    assert installer.installed == {"demo": {"good"}}


async def test_packages_are_put_back_when_the_store_cannot_commit() -> None:
    installer = RecordingInstaller()
    await service(InMemoryStore(), installer).save(with_packages("old"))
    with pytest.raises(Unavailable):
        await service(BrokenStore(), installer).save(with_packages("new"))
    assert installer.installed == {"demo": {"old"}}
    assert installer.events == ["installed demo", "installed demo", "undone demo"]


async def test_deleting_a_workspace_removes_its_packages_and_an_unknown_one_keeps_others() -> None:
    installer = RecordingInstaller()
    workspaces = service(InMemoryStore(), installer)
    await workspaces.save(with_packages("a"))
    with pytest.raises(NotFound):
        await workspaces.delete("other")
    assert installer.installed == {"demo": {"a"}}
    await workspaces.delete("demo")
    assert installer.installed == {}
