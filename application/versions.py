"""Saved versions: every successful save keeps its body, so any of the last FUNCTIONS_VERSIONS_KEPT can
be read back or restored. Runs are tagged with the version current when they started."""

import logging
from collections.abc import Sequence

from domain.errors import DomainError, InvalidRequest
from domain.model import Json
from ports.history import History, Version

log = logging.getLogger("functions.versions")


class Versions:
    def __init__(self, history: History, kept: int) -> None:
        self.history = history
        self.kept = kept
        # workspace -> its newest version number, so a run's version costs no query (None: none kept)
        self._current: dict[str, int | None] = {}

    async def saved(self, workspace: str, body: Json, functions: Sequence[str], saved_at: str) -> None:
        """Keep a body that was just saved. The save stands even if this fails: it is logged."""
        try:
            number = await self.history.add_version(workspace, body, functions, saved_at)
            await self.history.keep_versions(workspace, self.kept)
        except DomainError as exc:
            self._current.pop(workspace, None)
            log.error("workspace %r was saved but its version was not kept: %s", workspace, exc.message)
            return
        self._current[workspace] = number

    async def list(self, workspace: str) -> list[Version]:
        return await self.history.versions(workspace)

    async def get(self, workspace: str, number: int) -> Version:
        return await self.history.version(workspace, number)

    async def current(self, workspace: str) -> int | None:
        """The newest version's number; None when none is kept (saved before versions were) or the
        database cannot say: a run never fails for want of its version number."""
        if workspace not in self._current:
            try:
                newest = await self.history.versions(workspace)
            except DomainError:
                return None
            self._current[workspace] = newest[0].number if newest else None
        return self._current[workspace]

    def forget(self, workspace: str) -> None:
        self._current.pop(workspace, None)


def check_version_number(text: str) -> int:
    """A version number from a path: a positive integer, else InvalidRequest naming the field."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18 or int(text) < 1:
        raise InvalidRequest(f"invalid version {text!r}: a positive integer such as 3", field="version")
    return int(text)
