"""The one supervisor of host processes: spawn, restart with back-off, health states, and residency.

Every runtime uses it: the Node runtime keeps one host, the Python runtime a pool of kernels and a booted
spare, the dedicated tier a host per workspace. `HostPool` keeps hosts running; `Residency` decides which
workspaces stay loaded (least recently used out over a limit, idle ones after a while); `Tasks` owns the
background tasks, so none of their failures goes unlogged.
"""

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from enum import StrEnum
from typing import Any, Generic, TypeVar

from attrs import define

from adapters.hosts.process import HostProcess
from domain.errors import Unavailable
from domain.model import Json

log = logging.getLogger("functions.hosts")
WAIT_FOR_RESTART_S = 10.0  # how long a run waits for a host that is restarting before it is refused


class Health(StrEnum):
    STARTING = "starting"
    OK = "ok"
    RESTARTING = "restarting"
    UNAVAILABLE = "unavailable"  # could not start at all: stays so, and says why
    STOPPED = "stopped"


class Tasks:
    """Background tasks of one runtime: cancelled together; a failure is logged, never left unretrieved."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def cancel_all(self) -> None:
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_all(self) -> None:
        """Wait for every task to end (closes under way finish; nothing is cancelled)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None and not self.closing:
            log.error("%s: a background task failed: %s", self.name, error)


class HostPool:
    """Keeps `size` hosts made by `launch` running, and (with `spare`) one more booted to replace the first
    that dies at once. A dead host is replaced with back-off; `on_lost` hears of it first, so the runtime
    can forget what the host held."""

    def __init__(
        self,
        name: str,
        launch: Callable[[], Awaitable[HostProcess]],
        *,
        size: int = 1,
        spare: bool = False,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        on_lost: Callable[[HostProcess], None] | None = None,
    ) -> None:
        self.name = name
        self.launch = launch
        self.size = size
        self.keeps_spare = spare
        self.backoff_s = backoff_s
        self.on_lost = on_lost
        self.hosts: list[HostProcess] = []
        self.spare: HostProcess | None = None
        self.restarts = 0
        self.state = Health.STARTING
        self.error = ""
        self.tasks = Tasks(f"the {name} hosts")
        self._up = asyncio.Event()
        self._refilling = False

    async def start(self) -> None:
        """Launch every host; if one cannot start, the pool is unavailable and says why (no retry)."""
        try:
            hosts = await asyncio.gather(*(self.launch() for _ in range(self.size + self.keeps_spare)))
        except Unavailable as exc:
            self.state, self.error = Health.UNAVAILABLE, exc.message
            log.error("%s runtime unavailable: %s", self.name, exc.message)
            return
        self.hosts = list(hosts[: self.size])
        self.spare = hosts[self.size] if self.keeps_spare else None
        self.state = Health.OK
        self._up.set()
        for host in hosts:
            self.tasks.spawn(self._replace_when_dead(host))

    def live(self) -> list[HostProcess]:
        return [host for host in self.hosts if host.alive]

    async def host(self) -> HostProcess:
        """The first live host, waiting a while for one that is restarting."""
        if (live := self.live()) and self.state is Health.OK:
            return live[0]
        await self.wait_up()
        return self.live()[0]

    async def wait_up(self) -> None:
        """Return once every host is live; Unavailable (saying why) if that does not come soon."""
        waited = 0.0
        while not (self.live() and self._up.is_set()):
            if self.state in (Health.UNAVAILABLE, Health.STOPPED) or waited >= WAIT_FOR_RESTART_S:
                why = self.error or "no host is running"
                raise Unavailable(f"the {self.name} runtime is {self.state.value}: {why}")
            # Only while a host is being replaced: a short poll keeps the hot path free of waiters.
            await asyncio.sleep(0.01)
            waited += 0.01

    def swap_out(self, host: HostProcess) -> bool:
        """Put the booted spare in a worn host's place now, so nothing new is sent to it; the caller closes
        it once its work is done. False (it stays) without a spare ready."""
        spare = self.spare
        if self.tasks.closing or spare is None or not spare.alive or host not in self.hosts:
            return False
        self.hosts[self.hosts.index(host)], self.spare = spare, None
        self.restarts += 1
        return True  # its end refills the spare

    def health(self) -> dict[str, Json]:
        report: dict[str, Json] = {"status": self.state.value, "restarts": self.restarts}
        if self.error:
            report["error"] = self.error
        return report

    async def aclose(self) -> None:
        await self.tasks.cancel_all()
        hosts = [*self.hosts, *([self.spare] if self.spare else [])]
        await asyncio.gather(*(host.close() for host in hosts), return_exceptions=True)
        self.state = Health.STOPPED

    async def _replace_when_dead(self, host: HostProcess) -> None:
        await host.wait_closed()
        if self.tasks.closing:
            return
        if self.on_lost is not None:
            self.on_lost(host)
        if host is self.spare:
            self.spare = None
        elif host in self.hosts:
            index = self.hosts.index(host)
            log.warning("%s host stopped (%s); replacing it", self.name, host.exit_reason)
            spare, self.spare = self.spare, None
            if spare is not None and spare.alive:
                self.hosts[index] = spare  # at once: the spare was booted for this
            else:
                self._up.clear()
                self.state, self.error = Health.RESTARTING, host.exit_reason
                self.hosts[index] = await self._relaunch()
                self.tasks.spawn(self._replace_when_dead(self.hosts[index]))
            self.restarts += 1
            if all(h.alive for h in self.hosts):
                self.state, self.error = Health.OK, ""
                self._up.set()
        if self.keeps_spare and self.spare is None and not self._refilling:
            self._refilling = True  # one refill at a time: two at once would leave a host unwatched
            try:
                self.spare = await self._relaunch()
            finally:
                self._refilling = False
            self.tasks.spawn(self._replace_when_dead(self.spare))

    async def _relaunch(self) -> HostProcess:
        delay, ceiling = self.backoff_s
        while True:
            try:
                return await self.launch()
            except Unavailable as exc:
                self.error = exc.message
                await asyncio.sleep(delay)
                delay = min(delay * 2, ceiling)


@define
class Resident:
    """A workspace whose code a host holds, at one revision, and how it is being used."""

    revision: str
    last_used: float
    in_flight: int = 0


R = TypeVar("R", bound=Resident)


class Residency(Generic[R]):
    """The workspaces a runtime keeps loaded, least recently used first. Over `limit`, the least recently
    used idle one goes; one idle for `idle_timeout_s` goes too. `on_evict` lets the host know."""

    def __init__(self, limit: int, idle_timeout_s: float, on_evict: Callable[[str, R], None]) -> None:
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s
        self.on_evict = on_evict
        self._entries: OrderedDict[str, R] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def get(self, workspace_id: str, revision: str | None = None) -> R | None:
        """The resident entry (at `revision`, if given), now the most recently used."""
        entry = self._entries.get(workspace_id)
        if entry is None or (revision is not None and entry.revision != revision):
            return None
        self._entries.move_to_end(workspace_id)
        return entry

    def values(self) -> list[R]:
        return list(self._entries.values())

    def admit(self, workspace_id: str, entry: R) -> R:
        """Make `entry` resident (the most recently used), evicting over the limit."""
        self._entries[workspace_id] = entry
        self._entries.move_to_end(workspace_id)
        over = len(self._entries) - self.limit
        for other, resident in list(self._entries.items()):
            if over <= 0:
                break
            if other != workspace_id and resident.in_flight == 0:  # never one with a run in flight
                self.evict(other)
                over -= 1
        return entry

    def forget(self, workspace_id: str) -> R | None:
        """Drop the entry without telling the host (it has lost it already)."""
        return self._entries.pop(workspace_id, None)

    def evict(self, workspace_id: str) -> None:
        entry = self._entries.pop(workspace_id, None)
        if entry is not None:
            self.on_evict(workspace_id, entry)

    def clear(self) -> None:
        self._entries.clear()

    @contextlib.contextmanager
    def using(self, entry: R) -> Iterator[R]:
        """A run on `entry`: it is never evicted while in flight, and is used as of its end."""
        entry.in_flight += 1
        try:
            yield entry
        finally:
            entry.in_flight -= 1
            entry.last_used = time.monotonic()

    async def evict_idle_forever(self) -> None:
        """Evict each workspace idle (nothing in flight) for `idle_timeout_s`; checks 4 times a period."""
        interval = min(max(self.idle_timeout_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            deadline = time.monotonic() - self.idle_timeout_s
            for workspace_id, entry in list(self._entries.items()):
                if entry.in_flight == 0 and entry.last_used < deadline:
                    self.evict(workspace_id)
