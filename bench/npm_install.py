"""Benchmark of npm dependency installs: the time of a save that installs one package, and its disk use.

    .venv/bin/python bench/npm_install.py [--rounds 5] [--real]

Each round saves a new workspace whose function requires one small package (`leftpad`, one file), served
by the local registry of the tests (tests/npm/registry.py) so the figures measure npm and the service,
not the network. "cold" rounds start from an empty storage folder (empty npm cache); "warm" rounds reuse
one storage folder, so npm's cache already holds the package. `--real` adds the same for `lodash` from
the real registry. The save's own time without packages is printed as the baseline.
"""

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.node.runtime import NodeRuntime
from adapters.npm.installer import NpmInstaller
from adapters.storage.filesystem import FileSystemStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.model import Language
from tests.npm.registry import local_registry

IDS = itertools.count()
LEFTPAD = "module.exports = (s, n) => String(s).padStart(n, '0');"


def disk_kib(folder: Path) -> float:
    """Allocated size of everything under `folder` (du -sk)."""
    blocks = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in [*files, "."]:
            blocks += os.lstat(os.path.join(dirpath, name)).st_blocks
    return blocks * 512 / 1024


async def save_once(root: Path, registry: str | None, workspace_id: str, code: str) -> float:
    node = NodeRuntime(
        timeout_ms=5000, max_workers=10, idle_timeout_s=3600, max_old_generation_mb=64, builtin_modules=[]
    )
    await node.start()
    installer = NpmInstaller(root=root, timeout_s=300, registry=registry)
    service = Workspaces(FileSystemStore(root), {Language.NODEJS: node}, installer)
    try:
        started = time.perf_counter()
        await service.save(workspace_from_body(workspace_id, {"functions": {"f": {"code": code}}}))
        return (time.perf_counter() - started) * 1000
    finally:
        await node.aclose()


def measure(
    rounds: int, registry: str | None, code: str, fresh: Callable[[], Path]
) -> tuple[list[float], float]:
    """Each round saves a workspace of its own, so every round installs."""
    times, disk = [], 0.0
    for _ in range(rounds):
        root, workspace_id = fresh(), f"w{next(IDS)}"
        times.append(asyncio.run(save_once(root, registry, workspace_id, code)))
        disk = disk_kib(root / workspace_id)
    return times, disk


def report(label: str, times: list[float], disk: float | None = None) -> None:
    size = f", {disk:.0f} KiB on disk per workspace" if disk is not None else ""
    print(f"{label:<34} p50 {statistics.median(times):7.1f} ms  min {min(times):7.1f} ms{size}")


def run(rounds: int, real: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch, local_registry() as registry:
        registry.publish("leftpad", "1.0.0", {"index.js": LEFTPAD})
        counter = iter(range(10_000))

        def new_root() -> Path:
            return Path(scratch) / f"cold{next(counter)}"

        shared = Path(scratch) / "warm"
        versions = [os.popen(f"{tool} --version").read().strip() for tool in ("npm", "node")]
        print(f"npm {versions[0]}, node {versions[1]}")
        report("save without packages", measure(rounds, None, "return 1;", new_root)[0])
        report(
            "save + leftpad, cold npm cache", *measure(rounds, registry.url, "require('leftpad');", new_root)
        )
        measure(1, registry.url, "require('leftpad');", lambda: shared)  # fills the cache
        report(
            "save + leftpad, warm npm cache",
            *measure(rounds, registry.url, "require('leftpad');", lambda: shared),
        )
        if real:
            code = "require('lodash');"
            report("save + lodash (public npm registry), cold cache", *measure(rounds, None, code, new_root))
            measure(1, None, code, lambda: shared)
            report(
                "save + lodash (public npm registry), warm cache",
                *measure(rounds, None, code, lambda: shared),
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--real", action="store_true", help="also lodash from the real npm registry")
    arguments = parser.parse_args()
    run(arguments.rounds, arguments.real)
