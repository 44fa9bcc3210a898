"""InMemoryStore: a real store kept in a dict, for tests and embedders who need no disk."""

import itertools
from collections.abc import Mapping

from attrs import evolve

from domain.errors import NotFound
from domain.model import Workspace


class InMemoryStore:
    """Keeps workspaces and their generated files in memory; each save gets a new revision."""

    def __init__(self) -> None:
        self._workspaces: dict[str, Workspace] = {}
        self.generated: dict[str, dict[str, str]] = {}
        self._revisions = itertools.count(1)

    async def save(self, workspace: Workspace, generated: Mapping[str, str]) -> Workspace:
        saved = evolve(workspace, revision=f"mem-{next(self._revisions)}")
        self._workspaces[workspace.id] = saved
        self.generated[workspace.id] = dict(generated)
        return saved

    async def get(self, workspace_id: str) -> Workspace:
        try:
            return self._workspaces[workspace_id]
        except KeyError:
            raise NotFound(f"workspace {workspace_id!r} not found") from None

    async def delete(self, workspace_id: str) -> None:
        if self._workspaces.pop(workspace_id, None) is None:
            raise NotFound(f"workspace {workspace_id!r} not found")
        self.generated.pop(workspace_id, None)

    async def list(self) -> list[str]:
        return sorted(self._workspaces)
