"""NodeRuntime: runs nodejs functions in worker threads of one Node host (runtimes/node/host.mjs).

The service keeps the policy here (which workspaces stay loaded, least recently used first out, idle
eviction, restarting a dead host with back-off); the host keeps the mechanism (workers, timeouts,
memory limits).
"""

import asyncio
import contextlib
import json
import logging
import shutil
import subprocess
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import define

from adapters.hosts.process import HostProcess, Message, outcome_of, raise_compile_errors
from adapters.hosts.residency import evict_idle_forever, least_recently_used
from adapters.hosts.walls import HostPlan, Launch, Wall, Walls
from adapters.node.script import compile_sources, generate_script
from domain.errors import Unavailable
from domain.model import Json, Language, Outcome, Workspace

HOST_SCRIPT = Path(__file__).resolve().parents[2] / "runtimes" / "node" / "host.mjs"
MIN_NODE_MAJOR = 20
QUIET_WARNINGS = (20, 11)  # --disable-warning: the permission model's start-up warnings are not news
# Many workers reserve far more address space than they use (V8 code ranges, 10 GB per WebAssembly memory):
# an address-space limit would crash the host, so V8's heap limit per worker bounds memory instead.
NODE_OPEN_FILES = 4096
log = logging.getLogger("functions.node")


@define
class Loaded:
    """A workspace whose script the host holds, and how it is being used."""

    revision: str
    last_used: float
    in_flight: int = 0


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
        packages_root: Path | str | None = None,
        shared_modules_dir: Path | str | None = None,
        packages_allowed: Sequence[str] | None = None,
        packages_refused: Sequence[str] = (),
        node_binary: str = "node",
        max_result_bytes: int = 10 * 1024 * 1024,
        restart_backoff_s: tuple[float, float] = (0.1, 5.0),
        walls: Walls | None = None,
        only_workspace: str | None = None,
        native_addons: bool = False,
    ) -> None:
        self.timeout_ms = timeout_ms
        self.max_workers = max_workers
        self.idle_timeout_s = idle_timeout_s
        self.node_binary = node_binary
        self.restart_backoff_s = restart_backoff_s
        # A workspace's packages live in <packages_root>/<id>/node_modules (None: no packages at all).
        self.packages_root = Path(packages_root).resolve() if packages_root is not None else None
        self.shared_modules_dir = Path(shared_modules_dir).resolve() if shared_modules_dir else None
        self.walls = walls
        self.only_workspace = only_workspace  # set: the host may read this workspace's folder and no other
        self.native_addons = native_addons
        self._node_version: tuple[int, int] = (0, 0)
        self.host_config = {
            "builtins": list(builtin_modules),
            "sharedModules": str(self.shared_modules_dir) if self.shared_modules_dir else None,
            "packages": {
                "allow": list(packages_allowed) if packages_allowed is not None else None,
                "deny": list(packages_refused),
            },
            "maxOldGenerationSizeMb": max_old_generation_mb,
            "maxResultBytes": max_result_bytes,
            "logLimits": {"maxEntries": 1000, "maxBytes": 1024 * 1024},
        }
        self.restarts = 0
        self._host: HostProcess | None = None
        self._state = "starting"
        self._error = ""
        self._up = asyncio.Event()
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        """Start the host; without a usable `node` the runtime stays unavailable and says why."""
        binary = shutil.which(self.node_binary)
        if binary is None:
            self._unavailable(f"no '{self.node_binary}' found on PATH: install Node.js >= {MIN_NODE_MAJOR}")
            return
        self.node_binary = binary
        try:
            self._node_version = await node_version(binary)
            await self._launch()
        except Unavailable as exc:
            self._unavailable(exc.message)
            return
        self._spawn(self._evict_idle_forever())

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        sources = compile_sources(workspace)
        if not sources:
            return {}
        host = await self._running_host()
        reply = await host.request(
            {
                "type": "compile",
                "functions": [{"name": s.name, "source": s.text, "body": s.body} for s in sources],
            },
            timeout_s=30.0,
        )
        raise_compile_errors(reply)
        return {"index.js": generate_script(workspace)}

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        for _attempt in range(2):  # a second try only if the host lost the script meanwhile
            reply = await self._run_once(workspace, function, params)
            if reply["status"] != "not_loaded":
                return outcome_of(reply)
            self._loaded.pop(workspace.id, None)
        raise Unavailable(f"the nodejs host could not load workspace {workspace.id!r}")

    async def evict(self, workspace_id: str) -> None:
        if self._loaded.pop(workspace_id, None) is not None and self._host and self._host.alive:
            self._host.send({"type": "evict", "workspace": workspace_id})

    def health(self) -> Mapping[str, Json]:
        report: dict[str, Json] = {
            "status": self._state,
            "workers": len(self._loaded),
            "restarts": self.restarts,
        }
        if self._host is not None:
            report["node"] = self._host.ready.get("node")
        if self._error:
            report["error"] = self._error
        return report

    @property
    def host_pid(self) -> int | None:
        return self._host.pid if self._host else None

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._host is not None:
            await self._host.close()
        self._state = "stopped"

    # -- runs -------------------------------------------------------------------------------------

    async def _run_once(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Message:
        host = await self._running_host()
        entry = self._ensure_loaded(host, workspace)
        entry.in_flight += 1
        try:
            return await host.request(
                {
                    "type": "run",
                    "workspace": workspace.id,
                    "revision": workspace.revision,
                    "fn": function,
                    "params": params,
                    "timeoutMs": self.timeout_ms,
                },
                timeout_s=self.timeout_ms / 1000 + 5.0,  # the host times runs out; this catches a stuck host
            )
        finally:
            entry.in_flight -= 1
            entry.last_used = time.monotonic()

    def _ensure_loaded(self, host: HostProcess, workspace: Workspace) -> Loaded:
        entry = self._loaded.get(workspace.id)
        if entry is None or entry.revision != workspace.revision:
            host.send(
                {
                    "type": "load",
                    "workspace": workspace.id,
                    "revision": workspace.revision,
                    "script": generate_script(workspace),
                    "folder": str(self.packages_root / workspace.id) if self.packages_root else None,
                }
            )
            entry = self._loaded[workspace.id] = Loaded(workspace.revision, time.monotonic())
            self._evict_least_recently_used(keep=workspace.id)
        self._loaded.move_to_end(workspace.id)
        return entry

    # -- worker lifecycle -------------------------------------------------------------------------

    def _evict_least_recently_used(self, keep: str) -> None:
        for workspace_id in least_recently_used(self._loaded, self.max_workers, keep):
            self._evict_now(workspace_id)

    def _evict_now(self, workspace_id: str) -> None:
        self._loaded.pop(workspace_id, None)
        if self._host is not None and self._host.alive:
            self._host.send({"type": "evict", "workspace": workspace_id})

    async def _evict_idle_forever(self) -> None:
        await evict_idle_forever(self._loaded, self.idle_timeout_s, self._evict_now)

    # -- the host process -------------------------------------------------------------------------

    def readable(self) -> list[str]:
        """What the host reads: its scripts, the workspaces' packages (or one's) and the shared modules."""
        paths = [str(HOST_SCRIPT.parent)]
        if self.packages_root is not None:
            folder = self.packages_root / self.only_workspace if self.only_workspace else self.packages_root
            folder.mkdir(parents=True, exist_ok=True)  # Landlock admits paths that exist when the host starts
            paths.append(str(folder))
        if self.shared_modules_dir is not None:
            paths.append(str(self.shared_modules_dir))
        return paths

    def permission_flags(self) -> list[str]:
        """Node's permission model: read only `readable()`, write nothing, start no process."""
        major, minor = self._node_version
        if major < MIN_NODE_MAJOR:
            return []
        flags = ["--permission" if major >= 22 else "--experimental-permission", "--allow-worker"]
        flags += [f"--allow-fs-read={path}" for path in self.readable()]
        if self.native_addons:
            flags.append("--allow-addons")
        if (major, minor) >= QUIET_WARNINGS:
            flags += ["--disable-warning=ExperimentalWarning", "--disable-warning=SecurityWarning"]
        return flags

    def _launch_plan(self) -> Launch:
        flags = self.permission_flags()
        config = {**self.host_config, "egress": self.walls.egress_enforced() if self.walls else None}
        # vm.SourceTextModule: ES modules of packages and import() inside the sandbox (docs/dependencies.md)
        argv = [self.node_binary, *flags, "--experimental-vm-modules", str(HOST_SCRIPT), json.dumps(config)]
        if self.walls is None:
            return Launch(argv)
        model = (
            Wall(True, f"{flags[0]}: reads {len(self.readable())} folders, no writes, no child processes")
            if flags
            else Wall(False, f"Node.js {self._node_version[0]} has no permission model")
        )
        plan = HostPlan("nodejs", self.node_binary, self.readable(), open_files=NODE_OPEN_FILES)
        return self.walls.launch(plan, argv, extra={"permission_model": model})

    async def _launch(self) -> None:
        launch = self._launch_plan()
        host = HostProcess(
            launch.argv,
            name="nodejs",
            on_closed=launch.cleanup,
            pass_fds=launch.pass_fds,
            on_started=launch.started,
        )
        ready = await host.start()
        major = int(str(ready.get("node", "v0")).lstrip("v").split(".")[0] or 0)
        if major < MIN_NODE_MAJOR:
            await host.close()
            raise Unavailable(f"Node.js {ready.get('node')} is too old: the nodejs runtime needs >= 20")
        self._host, self._state, self._error = host, "ok", ""
        self._loaded.clear()  # a new host holds no scripts
        self._up.set()
        self._spawn(self._restart_when_dead(host))

    async def _restart_when_dead(self, host: HostProcess) -> None:
        await host.wait_closed()
        if self._closing:
            return
        self._up.clear()
        self._state, self._error = "restarting", host.exit_reason
        log.warning("nodejs host stopped (%s); restarting", host.exit_reason)
        delay, ceiling = self.restart_backoff_s
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._launch()
                self.restarts += 1
                return
            except Unavailable as exc:
                self._error = exc.message
                delay = min(delay * 2, ceiling)

    async def _running_host(self) -> HostProcess:
        host = self._host
        if host is not None and host.alive:
            return host
        if self._state == "unavailable":
            raise Unavailable(f"the nodejs runtime is unavailable: {self._error}")
        if not self._up.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), 10.0)
        if self._host is None or not self._host.alive:
            raise Unavailable(f"the nodejs runtime is {self._state}: {self._error or 'not started'}")
        return self._host

    def _unavailable(self, reason: str) -> None:
        self._state, self._error = "unavailable", reason
        log.error("nodejs runtime unavailable: %s", reason)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # A background task's failure is logged here, not left for the event loop to find unretrieved.
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None and not self._closing:
            log.error("%s runtime: a background task failed: %s", self.language.value, error)


_versions: dict[str, tuple[int, int]] = {}  # binary -> version: asked once, as hosts start by the hundred


async def node_version(binary: str) -> tuple[int, int]:
    """(major, minor) of a Node.js binary; (0, 0) if it does not say."""
    if binary in _versions:
        return _versions[binary]
    # In a thread: a start cancelled meanwhile leaves no half-watched child process behind.
    done = await asyncio.to_thread(
        subprocess.run, [binary, "--version"], capture_output=True, text=True, env={}, check=False
    )
    parts = done.stdout.strip().lstrip("v").split(".")
    try:
        version = _versions[binary] = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 0, 0
    return version
