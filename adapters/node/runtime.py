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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from adapters.hosts.process import HostProcess, timed_out
from adapters.hosts.protocol import Abort, Compile, Compiled, Evict, Load, NodeSource, Result, Run, RunStatus
from adapters.hosts.supervisor import HostPool, Residency, Resident
from adapters.hosts.walls import HostPlan, Launch, Wall, Walls
from adapters.node.script import compile_sources, generate_script
from domain.errors import StaleCode, Unavailable
from domain.model import Json, Language, Outcome, Workspace

HOST_SCRIPT = Path(__file__).resolve().parents[2] / "runtimes" / "node" / "host.mjs"
MIN_NODE_MAJOR = 20
QUIET_WARNINGS = (20, 11)  # --disable-warning: the permission model's start-up warnings are not news
# Many workers reserve far more address space than they use (V8 code ranges, 10 GB per WebAssembly memory):
# an address-space limit would crash the host, so V8's heap limit per worker bounds memory instead.
NODE_OPEN_FILES = 4096
log = logging.getLogger("functions.node")


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
        self.hosts = HostPool("nodejs", self._launch, backoff_s=restart_backoff_s, on_lost=self._lost)
        self.resident: Residency[Resident] = Residency(max_workers, idle_timeout_s, self._tell_evicted)
        self._unusable = ""  # no usable node binary: the runtime stays unavailable and says why

    async def start(self) -> None:
        """Start the host; without a usable `node` the runtime stays unavailable and says why."""
        binary = shutil.which(self.node_binary)
        if binary is None:
            self._unusable = f"no '{self.node_binary}' found on PATH: install Node.js >= {MIN_NODE_MAJOR}"
            log.error("nodejs runtime unavailable: %s", self._unusable)
            return
        self.node_binary = binary
        self._node_version = await node_version(binary)
        await self.hosts.start()
        if self.hosts.live():
            self.hosts.tasks.spawn(self.resident.evict_idle_forever())

    async def prepare(self, workspace: Workspace) -> Mapping[str, str]:
        sources = compile_sources(workspace)
        if not sources:
            return {}
        host = await self._host()
        check = Compile([NodeSource(s.name, s.text, s.body) for s in sources])
        reply = await host.request(check.wire, timeout_s=30.0)
        assert isinstance(reply, Compiled)
        reply.raise_first()
        return {"index.js": generate_script(workspace)}

    async def run(self, workspace: Workspace, function: str, params: Mapping[str, Json]) -> Outcome:
        run = Run(workspace.id, workspace.revision, function, params)
        for _attempt in range(2):  # again only if the host lost the code meanwhile (docs/hosts.md)
            host = await self._host()
            entry = self._loaded(host, workspace)
            with self.resident.using(entry):
                reply = await host.request(run.wire, self.timeout_ms / 1000, self._overran(host))
            assert isinstance(reply, Result)
            if reply.status is RunStatus.ABORTED:
                raise Unavailable((reply.error or {}).get("message", "the run was aborted"))
            if reply.status is not RunStatus.NOT_LOADED:
                return reply.outcome()
            if (held := self.resident.get(workspace.id)) is not None and held.revision != workspace.revision:
                raise StaleCode(f"workspace {workspace.id!r} changed while this run waited")
            self.resident.forget(workspace.id)
        raise Unavailable(f"the nodejs host could not load workspace {workspace.id!r}")

    async def evict(self, workspace_id: str) -> None:
        self.resident.evict(workspace_id)

    def health(self) -> Mapping[str, Json]:
        if self._unusable:
            return {"status": "unavailable", "workers": 0, "restarts": 0, "error": self._unusable}
        report: dict[str, Json] = {**self.hosts.health(), "workers": len(self.resident)}
        if live := self.hosts.live():
            report["node"] = live[0].ready.version
        return report

    @property
    def restarts(self) -> int:
        return self.hosts.restarts

    @property
    def host_pid(self) -> int | None:
        live = self.hosts.live()
        return live[0].pid if live else None

    async def aclose(self) -> None:
        await self.hosts.aclose()

    # -- runs -------------------------------------------------------------------------------------

    async def _host(self) -> HostProcess:
        if self._unusable:
            raise Unavailable(f"the nodejs runtime is unavailable: {self._unusable}")
        return await self.hosts.host()

    def _loaded(self, host: HostProcess, workspace: Workspace) -> Resident:
        """The workspace's entry, its code sent to the host first if the host does not hold this revision."""
        entry = self.resident.get(workspace.id, workspace.revision)
        if entry is None:
            folder = str(self.packages_root / workspace.id) if self.packages_root else None
            host.send(Load(workspace.id, workspace.revision, generate_script(workspace), folder).wire())
            entry = self.resident.admit(workspace.id, Resident(workspace.revision, time.monotonic()))
        return entry

    def _overran(self, host: HostProcess) -> "OverranFn":
        def overran(request_id: int) -> Result:
            with contextlib.suppress(Unavailable):  # a host already on its way out ends the worker anyway
                host.send(Abort(request_id).wire())  # the host ends the run's worker, and confirms
            message = f"the function did not finish within {self.timeout_ms} ms (the run timeout)"
            return timed_out(request_id, self.timeout_ms, message)

        return overran

    def _tell_evicted(self, workspace_id: str, _entry: Resident) -> None:
        for host in self.hosts.live():
            host.send(Evict(workspace_id).wire())

    def _lost(self, _host: HostProcess) -> None:
        self.resident.clear()  # a new host holds no code

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

    async def _launch(self) -> HostProcess:
        launch = self._launch_plan()
        host = HostProcess(
            launch.argv,
            name="nodejs",
            on_closed=launch.cleanup,
            pass_fds=launch.pass_fds,
            on_started=launch.started,
        )
        ready = await host.start()
        major = int(ready.version.lstrip("v").split(".")[0] or 0)
        if major < MIN_NODE_MAJOR:
            await host.close()
            raise Unavailable(f"Node.js {ready.version} is too old: the nodejs runtime needs >= 20")
        return host


OverranFn = Callable[[int], Result]


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
