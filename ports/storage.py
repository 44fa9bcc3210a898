"""The storage port: where workspaces and their generated scripts live."""

from collections.abc import Mapping
from typing import Protocol

from domain.model import Workspace


class WorkspaceStore(Protocol):
    """Keeps workspaces by id. Saves of one workspace are serialized; the last one wins whole."""

    async def save(self, workspace: Workspace, generated: Mapping[str, str]) -> Workspace:
        """Store the workspace with its generated files (name -> text); return it with its new revision.

        Generated files not named in `generated` are removed. Unavailable if storage fails; the
        previous version then stays whole.
        """
        ...

    async def get(self, workspace_id: str) -> Workspace:
        """The last saved version, with its revision; NotFound if there is none."""
        ...

    async def delete(self, workspace_id: str) -> None:
        """Remove the workspace and everything in its folder; NotFound if there is none."""
        ...

    async def list(self) -> list[str]:
        """The ids of every stored workspace, sorted."""
        ...
