"""What each isolation tier costs: memory per workspace and the first run's latency.

    .venv/bin/python -m tests.isolation.measure [workspaces]

Builds the service's real container for FUNCTIONS_ISOLATION=shared and =dedicated, saves N workspaces per
language and runs each once (a cold run), then a second time (warm). Memory is the sum over the service's
child processes (the hosts): RSS counts the pages they share (the node binary, libraries) in every
process, PSS splits them, so PSS is the fairer figure for "what one more workspace costs".
"""

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from domain.model import Function, Language, Workspace
from entrypoints.container import build_container, running

CODE = {Language.NODEJS: "return parameters.n + 1;", Language.PYTHON: "return parameters['n'] + 1"}


def children_memory_kb() -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over this process's children."""
    rss = pss = 0
    me = str(os.getpid())
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] != me:
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name == "Rss":
                    rss += int(value.split()[0])
                elif name == "Pss":
                    pss += int(value.split()[0])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, pss


async def measure(isolation: str, language: Language, count: int) -> str:
    with tempfile.TemporaryDirectory() as storage:
        environ = {
            "FUNCTIONS_ISOLATION": isolation,
            "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": storage,
            "KERNEL_POOL_SIZE": "2",
        }
        async with running(build_container(environ)) as workspaces:
            await asyncio.sleep(0.5)  # the hosts' spares finish booting
            before = children_memory_kb()
            cold: list[float] = []
            warm: list[float] = []
            for index in range(count):
                workspace_id = f"w{index}"
                await workspaces.save(Workspace(workspace_id, {"f": Function(CODE[language], language)}))
                for timings in (cold, warm):
                    started = time.perf_counter()
                    outcome = await workspaces.run(workspace_id, "f", {"n": index})
                    timings.append((time.perf_counter() - started) * 1000)
                    assert outcome.result == index + 1, outcome
            await asyncio.sleep(0.5)
            after = children_memory_kb()
    rss, pss = ((a - b) / count / 1024 for a, b in zip(after, before, strict=True))
    return (
        f"{isolation:9} {language.value:6} per workspace: RSS +{rss:6.1f} MiB, PSS +{pss:6.1f} MiB; "
        f"first run median {statistics.median(cold):6.1f} ms (max {max(cold):6.1f}); "
        f"second run median {statistics.median(warm):5.2f} ms"
    )


async def main(count: int) -> None:
    for isolation in ("shared", "dedicated"):
        for language in (Language.NODEJS, Language.PYTHON):
            try:
                print(await measure(isolation, language, count), flush=True)
            except AssertionError as failed:  # a run that did not succeed: say which, measure the rest
                print(f"{isolation:9} {language.value:6} not measured: {failed}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
