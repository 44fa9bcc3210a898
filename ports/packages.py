"""The packages port: what a workspace's code needs installed next to it before its save commits."""

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from domain.model import Workspace


class PackageInstaller(Protocol):
    """Installs the packages a workspace's code requires, one save of a workspace at a time."""

    def installing(self, workspace: Workspace) -> AbstractAsyncContextManager[None]:
        """Install the workspace's packages and put them in place for the block, in which the store commits.

        Raise DependencyError (naming the package and the rule, or npm's output) before the block runs: the
        previous packages then stay. If the block raises, the previous packages are put back. Saves of one
        workspace are serialized through the whole block, so packages and workspace.yaml match.
        """
        ...

    def removing(self, workspace_id: str) -> AbstractAsyncContextManager[None]:
        """Wait for the workspace's install in flight; when the block (the store's delete) succeeds, remove
        the workspace's packages too (its folder may be gone with it already)."""
        ...

    def stats(self) -> Mapping[str, int]:
        """Installs by outcome since start-up (installed, unchanged, refused, failed), for /metrics."""
        ...
