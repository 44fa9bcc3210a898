"""PythonRuntime: a pool of kernel processes (runtimes/python/kernel.py), a subinterpreter per workspace.

(Placeholder with the real constructor while the adapter is being written.)
"""

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Workspace


class PythonRuntime:
    """Runs python functions in subinterpreters of KERNEL_POOL_SIZE kernel processes."""

    language = Language.PYTHON

    def __init__(
        self,
        *,
        timeout_ms: int,
        pool_size: int,
        max_memory_mb: int,
        builtin_modules: Sequence[str],
        packages_whitelist: Sequence[str],
        packages_dir: Path | str | None = None,
        max_workspaces: int = 500,
        idle_timeout_s: float = 3600.0,
        python_binary: str = sys.executable,
    ) -> None:
        self.timeout_ms = timeout_ms

    async def start(self) -> None:
        pass

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        raise Unavailable("the python runtime is not built yet")

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        raise Unavailable("the python runtime is not built yet")

    async def evict(self, workspace_id: str) -> None:
        pass

    def health(self) -> Mapping[str, Json]:
        return {"status": "unavailable"}

    async def aclose(self) -> None:
        pass
