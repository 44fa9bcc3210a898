"""Python functions through the HTTP API: the real app and container, with real kernels."""

import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers
from starlette.testclient import TestClient

from adapters.python.packages import PackageInstallError, install_packages
from adapters.storage.memory import InMemoryStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.model import Language, Status
from entrypoints.container import build_container
from entrypoints.http.app import create_app
from tests.python.kernels import python_runtime

pytestmark = pytest.mark.kernel


@pytest.fixture
def client() -> Iterator[TestClient]:
    container = build_container({"PYTHON_FUNCTIONS_RUN_TIMEOUT": "1000", "KERNEL_POOL_SIZE": "2"})
    container.store.override(providers.Object(InMemoryStore()))
    runtime = python_runtime(timeout_ms=1000)
    container.runtimes.override(providers.Dict({Language.PYTHON: providers.Object(runtime)}))
    with TestClient(create_app(container)) as client:
        yield client


def save(client: TestClient, **functions: str) -> Any:
    body = {"functions": {name: {"code": code, "language": "python"} for name, code in functions.items()}}
    return client.post("/v2/functions/test", json=body)


def error_of(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == kind and error["message"]
    return error


def test_the_readme_example_saves_and_runs_a_python_function(client: TestClient) -> None:
    hello = {
        "code": "return 'Hello ' + name",
        "language": "python",
        "parameters": {"name": {"type": "string"}},
    }
    body = {"functions": {"hello": hello}}
    assert client.post("/v2/functions/test", json=body).json() == body
    answer = client.post("/v2/functions/test/run/hello", json={"parameters": {"name": "world"}})
    assert answer.status_code == 200 and answer.json()["result"] == "Hello world"
    assert answer.headers["x-functions-worker"] == "cold" and "run;dur=" in answer.headers["server-timing"]
    assert client.post("/v2/functions/test/run/hello", json={}).headers["x-functions-worker"] == "warm"


def test_each_python_error_has_its_status(client: TestClient) -> None:
    error = error_of(save(client, bad="return (1 +"), 400, "CompileError")
    assert error["function"] == "bad" and error["line"] == 1
    functions = {
        "boom": "raise KeyError('k')",
        "odd": "return object()",
        "spin": "while True: pass",
        "fat": "return bytearray(2 * 1024 * 1024 * 1024)",
    }
    assert save(client, **functions).status_code == 200

    def run(fn: str) -> Any:
        return client.post(f"/v2/functions/test/run/{fn}")

    assert error_of(run("boom"), 422, "FunctionError")["name"] == "KeyError"
    error_of(run("odd"), 422, "ResultNotSerializable")
    error_of(run("fat"), 422, "ResourceLimitError")
    error_of(run("spin"), 504, "TimeoutError")
    error_of(run("nope"), 404, "NotFound")


@pytest.mark.node
def test_a_workspace_mixes_nodejs_and_python_functions(tmp_path: Path) -> None:
    container = build_container(
        {"FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": str(tmp_path), "KERNEL_POOL_SIZE": "1"}
    )
    with TestClient(create_app(container)) as client:
        body = {
            "functions": {
                "js": {"code": "return 'from js';"},
                "py": {"code": "return 'from python'", "language": "python"},
            }
        }
        assert client.post("/v2/functions/mixed", json=body).status_code == 200
        assert client.post("/v2/functions/mixed/run/js").json()["result"] == "from js"
        assert client.post("/v2/functions/mixed/run/py").json()["result"] == "from python"
        assert {"index.js", "main.py"} <= {p.name for p in (tmp_path / "mixed").iterdir()}


def tiny_wheel(folder: Path) -> None:
    """A wheel built by hand (a zip with a dist-info): no build tools, no network."""
    folder.mkdir()
    with zipfile.ZipFile(folder / "tinypkg-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("tinypkg/__init__.py", "def shout(text):\n    return text.upper() + '!'\n")
        info = "tinypkg-1.0.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")


@pytest.mark.anyio
async def test_auto_installed_packages_can_be_imported(tmp_path: Path) -> None:
    tiny_wheel(tmp_path / "wheels")
    runtime = python_runtime(
        packages_dir=tmp_path / "packages",
        packages_auto_install=["tinypkg"],
        pip_options=["--no-index", "--find-links", str(tmp_path / "wheels")],
    )
    await runtime.start()
    try:
        service = Workspaces(InMemoryStore(), {Language.PYTHON: runtime})
        code = {"code": "import tinypkg\nreturn tinypkg.shout('hi')", "language": "python"}
        await service.save(workspace_from_body("w", {"functions": {"f": code}}))
        outcome = await service.run("w", "f")
        assert (outcome.status, outcome.result) == (Status.SUCCEEDED, "HI!")
    finally:
        await runtime.aclose()
    shutil.rmtree(tmp_path / "packages")


@pytest.mark.anyio
async def test_a_failed_auto_install_stops_start_up_with_pips_words(tmp_path: Path) -> None:
    runtime = python_runtime(
        packages_dir=tmp_path / "packages",
        packages_auto_install=["no-such-package-here"],
        pip_options=["--no-index"],
    )
    with pytest.raises(PackageInstallError, match="PYTHON_PACKAGES_AUTO_INSTALL.*no-such-package-here"):
        await runtime.start()
    await runtime.aclose()


@pytest.mark.anyio
async def test_a_restart_with_the_same_requirements_runs_no_pip(tmp_path: Path) -> None:
    tiny_wheel(tmp_path / "wheels")
    options = ["--no-index", "--find-links", str(tmp_path / "wheels")]
    packages = tmp_path / "packages"
    await install_packages(sys.executable, packages, ["tinypkg"], options)
    shutil.rmtree(tmp_path / "wheels")  # pip could not install it again now
    await install_packages(sys.executable, packages, ["tinypkg"], options)
    with pytest.raises(PackageInstallError):  # a changed list does run pip
        await install_packages(sys.executable, packages, ["tinypkg", "other"], options)
