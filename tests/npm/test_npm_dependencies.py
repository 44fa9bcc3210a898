"""npm packages per workspace (SPEC §5): real npm, real Node host, packages from a registry started here."""

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from attrs import frozen

from adapters.node.runtime import NodeRuntime
from adapters.npm.installer import NpmInstaller
from adapters.npm.rules import PackageRules
from adapters.storage.filesystem import FileSystemStore
from application.workspaces import Workspaces
from domain.body import workspace_from_body
from domain.errors import DependencyError, NotFound
from domain.model import Json, Language, Outcome, Status
from tests.e2e.serving import serving
from tests.npm.registry import LocalRegistry, local_registry

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed"),
]
LEFTPAD = "module.exports = (s, n) => String(s).padStart(n, '0');"


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with local_registry() as started:
        started.publish("leftpad", "1.0.0", {"index.js": LEFTPAD})
        started.publish("leftpad", "2.0.0", {"index.js": "module.exports = () => 'v2';"})
        started.publish(
            "boxed",
            "1.0.0",
            {
                "index.js": "const pad = require('leftpad');\nconst wrap = require('./lib/wrap');\n"
                "module.exports = (x) => wrap(pad(x, 4));",
                "lib/wrap.js": "module.exports = (s) => `[${s}]`;",
            },
            dependencies={"leftpad": "^1.0.0"},
        )
        started.publish("spawns", "1.0.0", {"index.js": "module.exports = require('child_process').spawn;"})
        started.publish(
            "esm-only", "1.0.0", {"index.mjs": "export default 1;"}, exports={"import": "./index.mjs"}
        )
        started.publish(
            "@acme/realm", "1.0.0", {"index.js": "module.exports = { list: () => [1], obj: {} };"}
        )
        started.publish("escapes", "1.0.0", {"index.js": "module.exports = require('../../workspace.yaml');"})
        yield started


@frozen
class Kit:
    """A service storing under `root`, with a real Node host and npm installer."""

    root: Path
    workspaces: Workspaces
    installer: NpmInstaller

    async def save(self, workspace_id: str, *codes: str, **extra: Json) -> None:
        functions = {f"f{i}": {"code": code} for i, code in enumerate(codes)}
        await self.workspaces.save(workspace_from_body(workspace_id, {"functions": functions, **extra}))

    async def run(self, workspace_id: str, function: str = "f0") -> Outcome:
        return await self.workspaces.run(workspace_id, function, {})

    async def result(self, workspace_id: str, function: str = "f0") -> Json:
        outcome = await self.run(workspace_id, function)
        assert outcome.status is Status.SUCCEEDED, outcome.error
        return outcome.result

    def version(self, workspace_id: str, package: str) -> str:
        manifest = self.root / workspace_id / "node_modules" / package / "package.json"
        version: str = json.loads(manifest.read_text())["version"]
        return version


@asynccontextmanager
async def kit_at(root: Path, registry_url: str | None, **options: Any) -> AsyncIterator[Kit]:
    builtins = options.pop("builtins", ["crypto", "util"])
    rules = options.pop("rules", PackageRules())
    shared = options.pop("shared", None)
    node = NodeRuntime(
        timeout_ms=5000,
        max_workers=20,
        idle_timeout_s=3600,
        max_old_generation_mb=64,
        builtin_modules=builtins,
        packages_root=root,
        shared_modules_dir=shared,
        packages_allowed=None if rules.allow is None else sorted(rules.allow),
        packages_refused=sorted(rules.deny),
    )
    installer = NpmInstaller(
        root=root,
        timeout_s=options.pop("timeout_s", 60),
        rules=rules,
        registry=registry_url,
        shared_modules_dir=shared,
    )
    await node.start()
    try:
        yield Kit(root, Workspaces(FileSystemStore(root), {Language.NODEJS: node}, installer), installer)
    finally:
        await node.aclose()


@pytest.fixture
async def kit(tmp_path: Path, registry: LocalRegistry) -> AsyncIterator[Kit]:
    async with kit_at(tmp_path, registry.url) as started:
        yield started


async def test_a_required_package_and_its_own_dependency_are_installed_and_load(kit: Kit) -> None:
    await kit.save("w", "return require('boxed')(7);")
    assert await kit.result("w") == "[0007]"
    files = {p.name for p in (kit.root / "w").iterdir()}
    assert {"package.json", "package-lock.json", "node_modules", "workspace.yaml"} <= files
    assert kit.version("w", "leftpad") == "1.0.0"  # boxed's ^1.0.0, though 2.0.0 is latest
    assert kit.installer.stats() == {"installed": 1}


async def test_package_code_runs_inside_the_workspace_context(kit: Kit) -> None:
    await kit.save(
        "w",
        "const r = require('@acme/realm'); return [r.list() instanceof Array, r.obj.constructor === Object];",
    )
    assert await kit.result("w") == [True, True]


async def test_unpinned_packages_get_the_latest_version_and_dependencies_pin(kit: Kit) -> None:
    await kit.save("latest", "return require('leftpad')(1, 2);")
    assert kit.version("latest", "leftpad") == "2.0.0"
    await kit.save("pinned", "return require('leftpad')(1, 2);", dependencies={"leftpad": "^1.0.0"})
    assert kit.version("pinned", "leftpad") == "1.0.0" and await kit.result("pinned") == "01"


async def test_the_lockfile_keeps_versions_through_reinstalls(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    registry.publish("stable", "1.0.0", {"index.js": "module.exports = '1.0.0';"})
    async with kit_at(tmp_path, registry.url) as kit:
        await kit.save("w", "return require('stable');")
        registry.publish("stable", "1.1.0", {"index.js": "module.exports = '1.1.0';"})
        shutil.rmtree(tmp_path / "w" / "node_modules")  # as on a new machine sharing the folder
        await kit.save("w", "return require('stable');")
        assert kit.version("w", "stable") == "1.0.0"
        await kit.save("w", "return require('stable');", "return require('leftpad')('', 1);")  # one more
        assert kit.version("w", "stable") == "1.0.0" and await kit.result("w") == "1.0.0"
        await kit.save("fresh", "return require('stable');")
        assert kit.version("fresh", "stable") == "1.1.0"
        assert kit.installer.stats()["installed"] == 4


async def test_saving_the_same_packages_again_runs_no_npm(kit: Kit, registry: LocalRegistry) -> None:
    await kit.save("w", "return require('leftpad')(1, 3);", dependencies={"leftpad": "1.0.0"})
    before = len(registry.requests)
    await kit.save("w", "return require('leftpad')(2, 3);", dependencies={"leftpad": "1.0.0"})
    assert len(registry.requests) == before and await kit.result("w") == "002"
    assert kit.installer.stats() == {"installed": 1, "unchanged": 1}


async def test_the_lists_refuse_at_save_naming_the_rule(tmp_path: Path, registry: LocalRegistry) -> None:
    async with kit_at(
        tmp_path, registry.url, rules=PackageRules(allow=["boxed", "leftpad"], deny=["leftpad"])
    ) as kit:
        with pytest.raises(DependencyError, match="NODEJS_PACKAGES_WHITELIST_IMPORT") as refused:
            await kit.save("w", "return require('@acme/realm');")
        assert refused.value.details["package"] == "@acme/realm"
        with pytest.raises(DependencyError, match="'leftpad' is refused.*BLACKLIST"):
            await kit.save("w", "return require('boxed');")  # boxed itself is allowed; its dependency is not
        assert not (tmp_path / "w").exists()


async def test_disable_npm_registry_refuses_packages_but_keeps_builtins(
    kit: Kit, registry: LocalRegistry
) -> None:
    with pytest.raises(DependencyError, match="disableNpmRegistry"):
        await kit.save("w", "return require('leftpad');", disableNpmRegistry=True)
    await kit.save("w", "return typeof require('crypto').randomUUID;", disableNpmRegistry=True)
    assert await kit.result("w") == "function"


async def test_a_failing_install_keeps_the_previous_version_and_its_packages(kit: Kit) -> None:
    await kit.save("w", "return require('leftpad')(5, 2);", dependencies={"leftpad": "1.0.0"})
    before = (kit.root / "w" / "package.json").read_text()
    with pytest.raises(DependencyError, match="no-such-package") as failed:
        await kit.save("w", "return require('no-such-package');", dependencies={"leftpad": "1.0.0"})
    assert "404" in failed.value.details["output"] and str(kit.root) not in failed.value.details["output"]
    assert (kit.root / "w" / "package.json").read_text() == before
    assert await kit.result("w") == "05"
    assert not list((kit.root / ".npm-staging").iterdir())


async def test_an_install_over_npm_install_timeout_fails_and_changes_nothing(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    registry.publish("slow", "1.0.0", {"index.js": "module.exports = 1;"})
    registry.delays["/-/tarballs/slow/1.0.0.tgz"] = 5.0
    async with kit_at(tmp_path, registry.url, timeout_s=1) as kit:
        with pytest.raises(DependencyError, match="NPM_INSTALL_TIMEOUT"):
            await kit.save("w", "return require('slow');")
        with pytest.raises(NotFound):
            await kit.workspaces.get("w")


async def test_concurrent_saves_of_one_workspace_are_serialized_and_the_last_wins_whole(kit: Kit) -> None:
    versions = {"1.0.0": "1.0.0", "2.0.0": "v2", "^1.0.0": "1.0.0"}
    code = "return require('leftpad').length === 2 ? require('leftpad')('1.0.0', 0) : require('leftpad')();"
    await asyncio.gather(*(kit.save("w", code, dependencies={"leftpad": v}) for v in versions))
    saved = await kit.workspaces.get("w")
    assert saved.dependencies is not None
    manifest = json.loads((kit.root / "w" / "package.json").read_text())
    assert manifest["dependencies"] == saved.dependencies  # the packages of the version that won
    assert await kit.result("w") == versions[saved.dependencies["leftpad"]]
    assert kit.installer.stats() == {"installed": 3}  # each waited for the one before: none overlapped
    assert not list((kit.root / ".npm-staging").iterdir())


async def test_a_packages_own_require_of_a_refused_builtin_fails_naming_package_and_setting(kit: Kit) -> None:
    # (fs, os, tty, net and a few more have inert stand-ins for packages: test_esm_packages.py)
    await kit.save("w", "return typeof require('spawns');")
    outcome = await kit.run("w")
    assert outcome.status is Status.FAILED and outcome.error is not None
    message = outcome.error["message"]
    assert "'spawns'" in message and "'child_process'" in message and "NODE_BUILTIN_MODULES" in message
    assert "at Object.<anonymous> (node_modules/spawns/index.js:1:" in outcome.error["stack"]


async def test_an_es_module_only_package_is_required_through_its_import_entry(kit: Kit) -> None:
    # More in test_esm_packages.py: Node itself would refuse a package exporting only an `import` entry.
    await kit.save("w", "return require('esm-only');")
    assert await kit.result("w") == {"default": 1}


async def test_package_code_cannot_require_files_outside_the_packages(kit: Kit) -> None:
    await kit.save("w", "return require('escapes');")
    outcome = await kit.run("w")
    assert outcome.error is not None and "outside the workspace's packages" in outcome.error["message"]


async def test_functions_cannot_require_files(kit: Kit) -> None:
    await kit.save("w", "return require('./node_modules/leftpad/index.js');")
    outcome = await kit.run("w")
    assert outcome.error is not None and "by name, not files" in outcome.error["message"]


async def test_shared_modules_load_without_an_install(tmp_path: Path, registry: LocalRegistry) -> None:
    shared = tmp_path / "shared"
    (shared / "node_modules" / "greet").mkdir(parents=True)
    (shared / "package.json").write_text("{}")
    (shared / "node_modules" / "greet" / "package.json").write_text('{"name": "greet", "main": "main.js"}')
    (shared / "node_modules" / "greet" / "main.js").write_text("module.exports = (n) => 'hi ' + n;")
    async with kit_at(tmp_path / "data", registry.url, shared=shared) as kit:
        await kit.save("w", "return require('greet')('you');", disableNpmRegistry=True)
        assert await kit.result("w") == "hi you"
        assert not (tmp_path / "data" / "w" / "node_modules").exists()


async def test_deleting_a_workspace_removes_its_packages(kit: Kit) -> None:
    await kit.save("w", "return require('leftpad')(1, 1);")
    await kit.workspaces.delete("w")
    assert not (kit.root / "w").exists()


async def test_dropping_every_package_removes_them_from_the_folder(kit: Kit) -> None:
    await kit.save("w", "return require('leftpad')(1, 1);")
    await kit.save("w", "return 1;")
    assert not (kit.root / "w" / "node_modules").exists() and await kit.result("w") == 1


@pytest.mark.registry
async def test_lodash_installs_from_the_real_registry_and_runs(tmp_path: Path) -> None:
    async with kit_at(tmp_path, None) as kit:
        await kit.save("w", "const _ = require('lodash'); return _.chunk([1, 2, 3, 4, 5], 2);")
        assert await kit.result("w") == [[1, 2], [3, 4], [5]]


def test_the_service_installs_packages_and_answers_a_refusal_with_400(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    environ = {"NPM_CONFIG_REGISTRY": registry.url, "NODEJS_PACKAGES_BLACKLIST_IMPORT": "boxed"}
    body = {
        "functions": {"f": {"code": "return require('leftpad')(3, 3);"}},
        "dependencies": {"leftpad": "^1"},
    }
    with serving(tmp_path, **environ) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v2/functions/w", json=body).json() == body
        assert client.post("/v2/functions/w/run/f", json={}).json()["result"] == "003"
        refused = client.post("/v2/functions/w", json={"functions": {"f": {"code": "require('boxed')"}}})
        assert refused.status_code == 400
        assert refused.json()["error"] == {
            "type": "DependencyError",
            "message": "package 'boxed' is refused: it is in NODEJS_PACKAGES_BLACKLIST_IMPORT",
            "package": "boxed",
            "rule": "NODEJS_PACKAGES_BLACKLIST_IMPORT",
        }
        assert client.post("/v2/functions/w/run/f", json={}).json()["result"] == "003"
        assert client.delete("/v2/functions/w").status_code == 204
    assert not (tmp_path / "w").exists()
