"""FUNCTIONS_ISOLATION=dedicated: code of one workspace that reaches the filesystem cannot read another's.

The route into the filesystem is the one an operator can open: `fs` in NODE_BUILTIN_MODULES (pathlib is a
default Python builtin). The same code reading its own workspace's files shows the probe does read what
it is let read. One level down, a process behind a dedicated host's Landlock rules, without Node's
permission model (as code that escaped both the `vm` context and the permission model would be), still
cannot open the neighbour's files.
"""

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.hosts.walls import HostPlan, Walls
from adapters.node.runtime import NodeRuntime
from tests.e2e.serving import serving
from tests.python.kernels import kernel
from tests.walls.conftest import run_launched

pytestmark = [pytest.mark.node, kernel]
CANARY = f"canary-{uuid.uuid4().hex}"
# Every path read, in parameters.paths, and the storage folder listed; each answer is the text or `refused`.
READ_ALL = """
const fs = require('fs');
const attempt = (read) => {
  try { return String(read()); } catch (error) { return `refused ${error.code}`; }
};
const answers = {};
for (const path of parameters.paths) answers[path] = attempt(() => fs.readFileSync(path, 'utf8'));
answers.listing = attempt(() => fs.readdirSync(parameters.storage).join(','));
return answers;
"""
PYTHON_READ_ALL = """
import pathlib
answers = {}
for path in parameters['paths']:
    try:
        answers[path] = pathlib.Path(path).read_text()
    except OSError as error:
        answers[path] = f'refused {type(error).__name__}'
return answers
"""


class Service:
    def __init__(self, http: httpx.Client, storage: Path) -> None:
        self.http, self.storage = http, storage

    def save(self, workspace: str, code: str, language: str = "nodejs") -> None:
        body = {"functions": {"f": {"code": code, "language": language}}}
        answer = self.http.post(f"/v2/functions/{workspace}", json=body)
        assert answer.status_code == 200, answer.text

    def run(self, workspace: str, **params: Any) -> Any:
        answer = self.http.post(f"/v2/functions/{workspace}/run/f", json={"parameters": params})
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    def files_of(self, workspace: str) -> list[str]:
        return [str(self.storage / workspace / name) for name in ("index.js", "workspace.yaml")]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    storage = tmp_path_factory.mktemp("walls").resolve()
    environ = {"FUNCTIONS_ISOLATION": "dedicated", "NODE_BUILTIN_MODULES": "fs", "KERNEL_POOL_SIZE": "1"}
    with serving(storage, **environ) as url, httpx.Client(base_url=url, timeout=30.0) as http:
        client = Service(http, storage)
        client.save("victim", f"return '{CANARY}';")
        assert client.run("victim") == CANARY
        yield client


def test_nodejs_code_reads_its_own_folder_and_not_its_neighbours(service: Service) -> None:
    service.save("attacker", READ_ALL)
    answers = service.run("attacker", paths=service.files_of("victim"), storage=str(service.storage))
    victim = [answers[path] for path in service.files_of("victim")]
    assert all(text.startswith("refused") for text in victim), answers
    assert answers["listing"].startswith("refused"), answers
    assert not any(CANARY in text for text in answers.values())
    own = service.run(
        "attacker", paths=service.files_of("attacker"), storage=str(service.storage / "attacker")
    )
    assert "readFileSync" in own[str(service.storage / "attacker" / "index.js")]  # its own folder stays open
    assert "workspace.yaml" in own["listing"]


def test_python_code_reads_no_workspace_folder(service: Service) -> None:
    service.save("py-attacker", PYTHON_READ_ALL, "python")
    answers = service.run("py-attacker", paths=service.files_of("victim"))
    assert all(text.startswith("refused") for text in answers.values()), answers


PROBE = """
const fs = require('fs');
const out = {};
for (const path of process.argv.slice(1)) {
  try { out[path] = fs.readFileSync(path, 'utf8'); } catch (error) { out[path] = `refused ${error.code}`; }
}
console.log(JSON.stringify(out));
"""


def test_a_dedicated_hosts_landlock_rules_alone_admit_only_its_workspace(tmp_path: Path) -> None:
    walls = Walls()
    if not walls.offered["landlock"].on:
        pytest.skip(f"no Landlock here: {walls.offered['landlock'].detail}")
    node = shutil.which("node")
    assert node is not None
    storage = tmp_path.resolve()
    for workspace in ("a", "b"):
        (storage / workspace).mkdir()
        (storage / workspace / "index.js").write_text(f"// {workspace} {CANARY}")
    host = NodeRuntime(
        timeout_ms=1000,
        max_workers=1,
        idle_timeout_s=60,
        max_old_generation_mb=64,
        builtin_modules=[],
        packages_root=storage,
        only_workspace="a",
        walls=walls,
    )
    plan = HostPlan("nodejs", node, host.readable())
    own, other = str(storage / "a" / "index.js"), str(storage / "b" / "index.js")
    # No permission flags: only the launcher's walls stand between this process and the files.
    done = run_launched(walls.launch(plan, [node, "-e", PROBE, own, other]))
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert answers[own] == f"// a {CANARY}"
    assert answers[other] == "refused EACCES"
