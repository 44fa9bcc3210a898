"""Python runtime figures through the use case (no HTTP): warm run p50/p99 and a new workspace's cold start.

.venv/bin/python bench/python_runtime.py
"""

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.python.runtime import PythonRuntime
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.model import Language
from entrypoints.settings import PYTHON_BUILTINS, PYTHON_PACKAGES

HELLO = {"code": "return 'Hello ' + name", "language": "python", "parameters": {"name": {"type": "string"}}}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main() -> None:
    runtime = PythonRuntime(
        timeout_ms=20_000,
        pool_size=2,
        max_memory_mb=512,
        builtin_modules=PYTHON_BUILTINS,
        packages_whitelist=PYTHON_PACKAGES,
    )
    await runtime.start()
    service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
    try:
        await service.save(workspace_from_body("warm", {"functions": {"hello": HELLO}}))
        for _ in range(200):
            await service.run("warm", "hello", {"name": "x"})
        warm = []
        for _ in range(2000):
            started = time.perf_counter()
            await service.run("warm", "hello", {"name": "x"})
            warm.append((time.perf_counter() - started) * 1000)
        cold = []
        for i in range(20):
            started = time.perf_counter()
            await service.save(workspace_from_body(f"cold{i}", {"functions": {"hello": HELLO}}))
            await service.run(f"cold{i}", "hello", {"name": "x"})
            cold.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)  # let the kernel boot its next spare interpreter, as between real saves
    finally:
        await runtime.aclose()
    print(f"python {runtime.health().get('python')} kernels, pool of 2")
    print(
        f"warm run (use case, no HTTP): p50 {statistics.median(warm):.3f} ms, "
        f"p99 {percentile(warm, 0.99):.3f} ms"
    )
    print(
        f"cold start (save + first run of a new workspace, 20): p50 {statistics.median(cold):.1f} ms, "
        f"p99 {percentile(cold, 0.99):.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
