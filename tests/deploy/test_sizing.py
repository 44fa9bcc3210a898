"""The pods' memory comes from the measured figures (docs/benchmarks.md) and the ConfigMap's settings,
with the arithmetic written in docs/deploy.md: change one, and this fails until the others follow."""

import re

from adapters.python.runtime import RECYCLE_AT_MEMORY_SHARE
from entrypoints.settings import load_settings
from tests.deploy.files import DOCS, container, settings_data

# MiB, rounded up from docs/benchmarks.md and docs/isolation.md (docs/deploy.md says which figure each is).
SERVICE = 45  # the service process: 38.5-42.7 MiB
NODE_HOST = 60  # the Node host with one worker: 59.6 MiB
NODE_WORKER = 8  # per idle worker: 5.85 MiB from 100 to 500 workers, 7.5-8.3 MiB in smaller checks
KERNEL = 30  # a Python kernel with no workspace (the spare): 30.5 MiB
PYTHON_WORKSPACE = 7  # per resident subinterpreter: 4.76 MiB on 3.11; 3.13 ~2 MiB more, estimated
BUSY_RUNS = 4  # Node runs at their heap limit at once, the headroom above the idle figure


def budget_mib() -> int:
    settings = load_settings(settings_data(), tty=False)
    lru, pool = settings.workers_max_lru, settings.kernel_pool_size
    node = NODE_HOST + lru * NODE_WORKER + BUSY_RUNS * settings.node_max_old_generation_mb
    # A kernel past 3/4 of PYTHON_WORKER_MAX_MEMORY_MB is drained and replaced by the spare.
    worn = int(settings.python_worker_max_memory_mb * RECYCLE_AT_MEMORY_SHARE)
    python = min((pool + 1) * KERNEL + lru * PYTHON_WORKSPACE, pool * worn + KERNEL)
    return SERVICE + node + python


def mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"write memory as Mi or Gi, not {quantity}"
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_the_memory_limit_holds_the_budget_of_the_settings() -> None:
    resources = container()["resources"]
    limit = mebibytes(resources["limits"]["memory"])
    assert budget_mib() <= limit < budget_mib() * 1.25, (budget_mib(), limit)
    assert mebibytes(resources["requests"]["memory"]) == limit  # memory is not given back: no overcommit


def test_the_cpu_request_matches_the_kernel_pool() -> None:
    settings = load_settings(settings_data(), tty=False)
    assert int(container()["resources"]["requests"]["cpu"]) == settings.kernel_pool_size
    assert "cpu" not in container()["resources"]["limits"]  # throttling would stretch runs to timeouts


def test_the_docs_show_the_same_arithmetic() -> None:
    assert f"{budget_mib():,} MiB" in DOCS.read_text()
