"""Which resident workspaces a runtime lets go when it holds more than its limit (shared by both hosts)."""

from collections.abc import Mapping
from typing import Protocol


class Resident(Protocol):
    in_flight: int


def least_recently_used(resident: Mapping[str, Resident], limit: int, keep: str) -> list[str]:
    """The ids to evict, oldest first (`resident` is ordered by last use): never `keep`, never one with a
    run in flight, so the count may stay over `limit` while everything is busy."""
    over = len(resident) - limit
    chosen: list[str] = []
    for workspace_id, entry in resident.items():
        if len(chosen) >= over:
            break
        if workspace_id != keep and entry.in_flight == 0:
            chosen.append(workspace_id)
    return chosen
