"""The composition root: the one place that names adapters. Building it starts nothing."""

import hashlib
import logging
import operator
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from dependency_injector import containers, providers

from adapters.history import open_history
from adapters.hosts.dedicated import DedicatedRuntime
from adapters.hosts.egress_facts import machine_policy
from adapters.hosts.walls import Walls
from adapters.node import script as node_script
from adapters.node.runtime import NodeRuntime
from adapters.npm.installer import NpmInstaller
from adapters.npm.rules import PackageRules
from adapters.python import script as python_script
from adapters.python.runtime import PythonRuntime
from adapters.remote.runtime import RemotePythonRuntime
from adapters.storage.filesystem import FileSystemStore
from application.history import HistoryPolicy
from application.metering import metered
from application.workspaces import CURRENT, REGENERATED, Workspaces
from domain.model import Language
from entrypoints.http.metrics import Metrics
from entrypoints.settings import Settings, load_settings
from ports.history import History
from ports.runtime import Runtime

log = logging.getLogger(__name__)


def one_host_per_workspace(make_host: Callable[..., Runtime]) -> Callable[[str], Runtime]:
    """Workspace id -> a Node runtime of its own, whose host may read only that workspace's folder."""
    return lambda workspace_id: make_host(only_workspace=workspace_id, max_workers=1)


def compile_checker(make_host: Callable[..., Runtime]) -> Runtime:
    return make_host(packages_root=None, max_workers=1)


class Container(containers.DeclarativeContainer):
    """Settings in, the service's objects out; tests override `store` and `runtimes`."""

    settings = providers.Dependency(instance_of=Settings)
    store = providers.Singleton(FileSystemStore, root=settings.provided.storage_dir)
    # Which addresses functions may reach (FUNCTIONS_EGRESS, FUNCTIONS_EGRESS_ALLOW), judged by the walls.
    egress = providers.Singleton(
        machine_policy, mode=settings.provided.egress, allow=settings.provided.egress_allow
    )
    # The operating-system walls of every host (FUNCTIONS_WALLS), asked of the machine once.
    walls = providers.Singleton(Walls, mode=settings.provided.walls, egress=egress)
    # The embedded Python runtime; LRU and idle eviction reuse the Node settings (one policy, two runtimes).
    local_python = providers.Singleton(
        PythonRuntime,
        timeout_ms=settings.provided.python_timeout_ms,
        pool_size=settings.provided.kernel_pool_size,
        max_memory_mb=settings.provided.python_worker_max_memory_mb,
        builtin_modules=settings.provided.python_builtin_modules,
        packages_whitelist=settings.provided.python_packages_whitelist,
        packages_dir=settings.provided.python_packages_dir,
        packages_auto_install=settings.provided.python_packages_auto_install,
        python_binary=settings.provided.python_kernel_binary,
        max_workspaces=settings.provided.workers_max_lru,
        idle_timeout_s=settings.provided.node_idle_timeout_s,
        dedicated_kernels=providers.Callable(operator.eq, settings.provided.isolation, "dedicated"),
        walls=walls,
    )
    remote_python = providers.Singleton(
        RemotePythonRuntime,
        url=settings.provided.python_api_url,
        timeout_ms=settings.provided.python_timeout_ms,
        api_key=settings.provided.api_key,
    )
    # PYTHON_API_URL set: Python runs on that `functions python-api`; unset: embedded, in this process.
    python_runtime = providers.Selector(
        providers.Callable(lambda url: "remote" if url else "local", settings.provided.python_api_url),
        local=local_python,
        remote=remote_python,
    )
    # A Node host with the service's settings: FUNCTIONS_ISOLATION=shared runs every workspace in one.
    node_host = providers.Factory(
        NodeRuntime,
        timeout_ms=settings.provided.node_timeout_ms,
        max_workers=settings.provided.workers_max_lru,
        idle_timeout_s=settings.provided.node_idle_timeout_s,
        max_old_generation_mb=settings.provided.node_max_old_generation_mb,
        builtin_modules=settings.provided.node_builtin_modules,
        packages_root=settings.provided.storage_dir,  # <storage>/<id>/node_modules, as the store's
        shared_modules_dir=settings.provided.shared_node_modules_dir,
        packages_allowed=settings.provided.nodejs_packages_whitelist,
        packages_refused=settings.provided.nodejs_packages_blacklist,
        walls=walls,
        native_addons=settings.provided.nodejs_native_addons,
    )
    # FUNCTIONS_ISOLATION=dedicated: a host per workspace, walled into its folder; saves are compile-checked
    # (parsed, nothing run) by one host that sees no workspace folder at all.
    dedicated_node = providers.Singleton(
        DedicatedRuntime,
        factory=providers.Callable(one_host_per_workspace, node_host.provider),
        language=Language.NODEJS,
        max_hosts=settings.provided.workers_max_lru,
        idle_timeout_s=settings.provided.node_idle_timeout_s,
        checker=providers.Callable(compile_checker, node_host.provider),
    )
    # A registry by language: the Python runtime joins it under Language.PYTHON.
    runtimes = providers.Dict(
        {
            Language.NODEJS: providers.Selector(
                settings.provided.isolation,
                shared=providers.Singleton(node_host),
                dedicated=dedicated_node,
            ),
            Language.PYTHON: python_runtime,
        }
    )
    metrics = providers.Singleton(Metrics, workspace_labels=settings.provided.metrics_workspace_labels)
    # Runs are counted where the language is known: around each runtime.
    metered_runtimes = providers.Callable(metered, runtimes, metrics.provided.meter)
    packages = providers.Singleton(
        NpmInstaller,
        root=settings.provided.storage_dir,
        timeout_s=settings.provided.npm_install_timeout_s,
        rules=providers.Factory(
            PackageRules,
            allow=settings.provided.nodejs_packages_whitelist,
            deny=settings.provided.nodejs_packages_blacklist,
        ),
        registry=settings.provided.npm_registry,
        environment=settings.provided.npm_environment,
        shared_modules_dir=settings.provided.shared_node_modules_dir,
    )
    workspaces = providers.Singleton(Workspaces, store=store, runtimes=metered_runtimes, packages=packages)
    # Versions and runs: SQLite in the storage folder, or PostgreSQL at FUNCTIONS_DATABASE_URL.
    history = providers.Singleton(
        open_history, database_url=settings.provided.database_url, storage_root=settings.provided.storage_dir
    )
    history_policy = providers.Factory(
        HistoryPolicy,
        runs_kept=settings.provided.run_history,
        keep_parameters=settings.provided.run_history_parameters,
        versions_kept=settings.provided.versions_kept,
    )


def build_container(environ: Mapping[str, str] | None = None) -> Container:
    """A container for `environ` (the process environment by default); SettingsError on a bad value."""
    return Container(settings=providers.Object(load_settings(environ)))


@asynccontextmanager
async def running(container: Container, *, recover_runs: bool = True) -> AsyncIterator[Workspaces]:
    """Start the history and every runtime, regenerate scripts if asked, and close them on the way out.
    `recover_runs`: fail the runs a stopped service left unfinished (not for a CLI command on the local
    storage, which may share it with a service that holds them)."""
    workspaces: Workspaces = container.workspaces()
    runtimes = list(workspaces.runtimes.values())
    history: History = container.history()
    try:
        await start_history(history, recover_runs)
        async with anyio.create_task_group() as group:
            for runtime in runtimes:
                group.start_soon(runtime.start)
        if container.settings().update_scripts_on_startup:
            report = await workspaces.regenerate_all(generator_version())
            done = sum(why == REGENERATED for why in report.values())
            current = sum(why == CURRENT for why in report.values())
            # Instances starting together share the work: the sum of these counts is the workspaces'.
            log.info("regenerated the scripts of %d workspaces (%d were current already)", done, current)
            for workspace_id, why in report.items():
                if why not in (REGENERATED, CURRENT):
                    log.error("workspace %r kept its previous scripts: %s", workspace_id, why)
        yield workspaces
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled shutdown must still stop the hosts
            async with anyio.create_task_group() as group:
                for runtime in runtimes:
                    group.start_soon(_close, runtime)
            await _close_history(history)


# Async runs live in the process that took them: one that stopped under them left them unfinished.
UNFINISHED_REASON = "the service stopped (crashed or was killed) before this run finished; run it again"


async def start_history(history: History, recover_runs: bool = True) -> None:
    """Open the history, and fail the runs a stopped service left queued or running: never lost silently."""
    await history.start()
    failed = await history.fail_unfinished(UNFINISHED_REASON) if recover_runs else 0
    if failed:
        log.warning("marked %d runs failed: the service stopped before they finished", failed)


def generator_version() -> str:
    """Which code generates the scripts: a digest of the generators' sources, so an upgrade that changes
    them regenerates every workspace once at the next UPDATE_SCRIPTS_ON_STARTUP or `functions migrate`."""
    digest = hashlib.sha256()
    for module in (node_script, python_script):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


async def _close_history(history: History) -> None:
    try:
        await history.aclose()
    except Exception:
        log.exception("closing the history failed")


async def _close(runtime: Runtime) -> None:
    # One runtime failing to close must not keep the others running.
    try:
        await runtime.aclose()
    except Exception:
        log.exception("closing the %s runtime failed", runtime.language.value)
