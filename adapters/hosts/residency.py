"""Which resident workspaces a runtime lets go: over its limit, or idle (shared by every runtime)."""

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Protocol


class Resident(Protocol):
    in_flight: int


class Used(Protocol):
    in_flight: int
    last_used: float


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


async def evict_idle_forever(
    resident: Mapping[str, Used], idle_timeout_s: float, evict: Callable[[str], None]
) -> None:
    """Evict each workspace idle (nothing in flight) for `idle_timeout_s`; checks 4 times per period."""
    interval = min(max(idle_timeout_s / 4, 0.05), 30.0)
    while True:
        await asyncio.sleep(interval)
        deadline = time.monotonic() - idle_timeout_s
        for workspace_id, entry in list(resident.items()):
            if entry.in_flight == 0 and entry.last_used < deadline:
                evict(workspace_id)
