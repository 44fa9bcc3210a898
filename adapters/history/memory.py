"""InMemoryHistory: the History port in dictionaries, for tests and for a service that keeps no history
on disk. It stores what a database would give back (records.as_stored), so it answers as they do."""

from collections.abc import Sequence

from attrs import evolve

from adapters.history.records import UNFINISHED, as_stored, dump_json, load_json, unfinished_error
from domain.errors import NotFound
from domain.model import Json
from ports.history import RunRecord, Version


class InMemoryHistory:
    def __init__(self) -> None:
        self._versions: dict[str, dict[int, tuple[Version, str | None]]] = {}  # the body as JSON text
        self._last_number: dict[str, int] = {}  # so keep_versions never lets a number be given twice
        self._runs: dict[str, RunRecord] = {}

    async def start(self) -> None:
        pass

    async def add_version(self, workspace: str, body: Json, functions: Sequence[str], saved_at: str) -> int:
        number = self._last_number.get(workspace, 0) + 1
        self._last_number[workspace] = number
        version = Version(workspace, number, saved_at, tuple(functions))
        self._versions.setdefault(workspace, {})[number] = (version, dump_json(body))
        return number

    async def versions(self, workspace: str) -> list[Version]:
        kept = self._versions.get(workspace, {})
        return [kept[number][0] for number in sorted(kept, reverse=True)]

    async def version(self, workspace: str, number: int) -> Version:
        kept = self._versions.get(workspace, {}).get(number)
        if kept is None:
            raise NotFound(f"workspace {workspace!r} has no version {number} kept", version=number)
        return evolve(kept[0], body=load_json(kept[1]))

    async def keep_versions(self, workspace: str, newest: int) -> None:
        kept = self._versions.get(workspace, {})
        for number in sorted(kept, reverse=True)[max(newest, 0) :]:
            del kept[number]

    async def record_runs(self, runs: Sequence[RunRecord]) -> None:
        self._runs.update({run.id: as_stored(run) for run in runs})

    async def runs(
        self,
        workspace: str,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[RunRecord]:
        chosen = (
            run
            for run in self._newest_first(workspace)
            if (function is None or run.function == function)
            and (status is None or run.status == status)
            and (before is None or run.id < before)
        )
        return [run for run, _ in zip(chosen, range(max(limit, 0)), strict=False)]

    async def run(self, workspace: str, run_id: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is None or run.workspace != workspace:
            raise NotFound(f"workspace {workspace!r} has no run {run_id!r} kept", run=run_id)
        return run

    async def keep_runs(self, workspace: str, newest: int) -> None:
        for run in self._newest_first(workspace)[max(newest, 0) :]:
            del self._runs[run.id]

    async def forget_workspace(self, workspace: str) -> None:
        self._versions.pop(workspace, None)
        self._last_number.pop(workspace, None)
        for run in self._newest_first(workspace):
            del self._runs[run.id]

    async def fail_unfinished(self, reason: str) -> int:
        unfinished = [run for run in self._runs.values() if run.status in UNFINISHED]
        for run in unfinished:
            self._runs[run.id] = as_stored(evolve(run, status="failed", error=unfinished_error(reason)))
        return len(unfinished)

    async def aclose(self) -> None:
        pass

    def _newest_first(self, workspace: str) -> list[RunRecord]:
        return sorted(
            (r for r in self._runs.values() if r.workspace == workspace), key=lambda r: r.id, reverse=True
        )
