"""Shared fixtures: the anyio backend, and whether a real Node.js host can run here."""

import os
import shutil
import subprocess

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the adapters use asyncio subprocesses and tasks


def _node_major() -> int:
    node = shutil.which("node")
    if node is None:
        return 0
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    return int(version.strip().lstrip("v").split(".")[0] or 0)


HAVE_NODE = _node_major() >= 20


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `node` need Node.js >= 20; elsewhere they skip, except in CI, where they must run."""
    if HAVE_NODE:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI needs Node.js >= 20 on PATH for the tests marked 'node'")
    skip = pytest.mark.skip(reason="Node.js >= 20 not found on PATH")
    for item in items:
        if "node" in item.keywords:
            item.add_marker(skip)
