"""The runtime port: one language's host that compiles and runs user functions."""

from collections.abc import Mapping
from typing import Protocol

from domain.model import Json, Language, Outcome, Workspace


class Runtime(Protocol):
    """One language's host. Domain types in, Outcome out."""

    language: Language

    async def start(self) -> None:
        """Start the host. A host that cannot start leaves the runtime unavailable, not the service down."""
        ...

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        """Compile this language's functions and return the generated files (name -> text).

        Raise CompileError naming the function, line and column. Called before a save commits.
        """
        ...

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        """Run one function. User errors, timeouts and limits are an Outcome; Unavailable means the host
        is broken. A workspace whose revision changed since its last run gets its new code."""
        ...

    async def evict(self, workspace_id: str) -> None:
        """Forget the workspace's loaded code and state (its `cache` goes with it)."""
        ...

    def health(self) -> Mapping[str, Json]:
        """The runtime's state for /sys/healthcheck; `status` is `ok`, `starting` or `unavailable`."""
        ...

    async def aclose(self) -> None:
        """Stop the host and everything it runs."""
        ...
