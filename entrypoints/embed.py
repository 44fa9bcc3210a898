"""The service in-process: what the HTTP API does, for a Python program that wants no HTTP.

    async with open_service({"FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": "/tmp/fns"}) as service:
        await service.save("demo", {"functions": {"hi": {"code": "return 'hi';"}}})
        outcome = await service.run("demo", "hi")

The HTTP app runs on this same object, so both get the same validation, errors, readiness and stop.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from application.service import Gate, Service
from entrypoints.container import Container, build_container, running

__all__ = ["Gate", "Service", "open_service", "service_of"]


def service_of(container: Container) -> Service:
    """The Service on a container's use cases, its metrics told when it is ready."""
    settings = container.settings()
    metrics = container.metrics()
    service = Service(
        container.workspaces(),
        grace_s=settings.shutdown_grace_s,
        walls=lambda: container.walls().report(),
        metrics=metrics,
        history=container.history(),
        policy=container.history_policy(),
        max_concurrent_runs=settings.max_concurrent_runs,
    )
    metrics.ready = lambda: service.ready
    metrics.install_stats = lambda: container.packages().stats()
    return service


@asynccontextmanager
async def open_service(
    environ: Mapping[str, str] | None = None,
    *,
    container: Container | None = None,
    recover_runs: bool = True,
) -> AsyncIterator[Service]:
    """Build and start the service, yield it ready, and on the way out stop it and its runtime hosts.

    `environ` holds the settings (the README's variables); None reads the process environment.
    """
    services = container or build_container(environ)
    async with running(services, recover_runs=recover_runs):
        service = service_of(services)
        service.start_history()  # the run history's writer
        service.gate.open()
        try:
            yield service
        finally:
            await service.stop()
