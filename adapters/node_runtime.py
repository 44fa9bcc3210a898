"""NodeRuntime: drives runtimes/node/host.mjs (placeholder while the real adapter is written)."""

from collections.abc import Mapping, Sequence

from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Workspace


class NodeRuntime:
    """Runs nodejs functions in worker threads of one Node host process."""

    language = Language.NODEJS

    def __init__(
        self,
        *,
        timeout_ms: int,
        max_workers: int,
        idle_timeout_s: float,
        max_old_generation_mb: int,
        builtin_modules: Sequence[str],
        node_binary: str = "node",
    ) -> None:
        self.timeout_ms = timeout_ms

    async def start(self) -> None:
        pass

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        raise Unavailable("the nodejs runtime is not built yet")

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        raise Unavailable("the nodejs runtime is not built yet")

    async def evict(self, workspace_id: str) -> None:
        pass

    def health(self) -> Mapping[str, Json]:
        return {"status": "unavailable"}

    async def aclose(self) -> None:
        pass
