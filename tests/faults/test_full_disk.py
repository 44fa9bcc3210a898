"""A full disk during a save: a 503 Unavailable that names the storage and the cause, never a 500, and
the previous version stays readable and runnable. On a real full filesystem (a small tmpfs, where this
process may mount one) and, everywhere, on a store whose writes fail with ENOSPC."""

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from dependency_injector import providers
from starlette.testclient import TestClient

from adapters.storage import filesystem as fs_store
from adapters.storage.filesystem import FileSystemStore
from domain.model import Language
from entrypoints.container import build_container
from entrypoints.http.app import create_app
from tests.e2e.services import scripted
from tests.faults.service import Service
from tests.npm.registry import LocalRegistry, local_registry

FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


def body(version: str) -> dict[str, Any]:
    return {
        "functions": {
            "js": {"code": f"return '{version}';"},
            "py": {"code": f"return '{version}'", "language": "python"},
        }
    }


def assert_storage_unavailable(answer: httpx.Response, workspace: str) -> None:
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["type"] == "Unavailable"
    assert error["message"].startswith(f"storage failed while saving workspace '{workspace}': {FULL}"), error


def result_of(http: httpx.Client, function: str) -> Any:
    answer = http.post(f"/v2/functions/full/run/{function}")
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test; skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full to the last block; the file, to free the space again."""
    filler = folder / ".filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (64 * 1024, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with local_registry() as started:
        started.publish("tiny", "1.0.0", {"index.js": "module.exports = 'tiny';"})
        yield started


@pytest.mark.node
@pytest.mark.kernel
def test_a_full_filesystem_answers_503_naming_storage_and_keeps_the_previous_version(
    small_disk: Path, tmp_path: Path, registry: LocalRegistry
) -> None:
    service = Service(
        small_disk / "functions", log=tmp_path / "service.log", NPM_CONFIG_REGISTRY=registry.url
    )
    with_package = {
        "functions": {"js": {"code": "return require('tiny');"}},
        "dependencies": {"tiny": "1.0.0"},
    }
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.url, timeout=30) as http:
            assert http.post("/v2/functions/full", json=body("v1")).status_code == 200
            filler = fill(small_disk)

            # npm writes too: its failure on a full disk is the storage's, not the package's
            answer = http.post("/v2/functions/full", json=with_package)
            assert answer.status_code == 503 and "storage" in answer.json()["error"]["message"], answer.text

            assert_storage_unavailable(http.post("/v2/functions/full", json=body("v2")), "full")
            assert_storage_unavailable(http.post("/v2/functions/new", json=body("v1")), "new")
            assert http.get("/v2/functions/full").json() == body("v1")
            for function in ("js", "py"):
                assert result_of(http, function) == "v1"
            assert http.get("/v2/functions").json() == {"workspaces": ["full"]}

            filler.unlink()  # space again: saves work as before
            assert http.post("/v2/functions/full", json=body("v2")).status_code == 200
            for function in ("js", "py"):
                assert result_of(http, function) == "v2"
        assert not list(small_disk.glob("functions/**/.tmp-*")), "a failed save left scratch files"
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log_text()


class DiskFull(ModuleType):
    """The os module as fs_store sees it, except that every write fails as on a full disk."""

    def __init__(self) -> None:
        super().__init__("os")

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, FULL)


def test_a_store_failing_with_enospc_answers_503_and_keeps_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = scripted()
    container = build_container({})
    container.store.override(providers.Object(FileSystemStore(tmp_path)))
    container.runtimes.override(providers.Dict({Language.NODEJS: providers.Object(runtime)}))
    echo, shout = {"functions": {"f": {"code": "echo"}}}, {"functions": {"f": {"code": "shout"}}}
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        assert client.post("/v2/functions/w", json=echo).status_code == 200
        monkeypatch.setattr(fs_store, "os", DiskFull())
        answer = client.post("/v2/functions/w", json=shout)
        assert answer.status_code == 503, answer.text
        message = answer.json()["error"]["message"]
        assert message.startswith(f"storage failed while saving workspace 'w': {FULL} (w/"), message
        assert str(tmp_path) not in message  # the storage path is nobody's business outside the service
        assert client.get("/v2/functions/w").json() == echo
        assert client.post("/v2/functions/w/run/f", json={"parameters": {"word": "a"}}).json()["result"] == {
            "word": "a"
        }
        monkeypatch.undo()
        assert client.post("/v2/functions/w", json=shout).status_code == 200
        assert (
            client.post("/v2/functions/w/run/f", json={"parameters": {"word": "a"}}).json()["result"] == "A"
        )
    assert not list(tmp_path.glob("**/.tmp-*"))
