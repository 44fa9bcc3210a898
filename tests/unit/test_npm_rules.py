"""Which packages a workspace needs and which the rules refuse: pure, no npm."""

import pytest

from adapters.npm.rules import (
    PackageRules,
    package_of,
    refused_dependencies,
    required_packages,
    wanted_packages,
)
from domain.errors import DependencyError
from domain.model import Function, Language, Workspace
from entrypoints.settings import SettingsError, load_settings, npm_environment


def workspace(*codes: str, dependencies: dict[str, str] | None = None, off: bool | None = None) -> Workspace:
    functions = {f"f{i}": Function(code) for i, code in enumerate(codes)}
    return Workspace("w", functions, dependencies=dependencies, disable_npm_registry=off)


def nothing_shared(name: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("specifier", "package"),
    [
        ("lodash", "lodash"),
        ("lodash/fp", "lodash"),
        ("@scope/pkg", "@scope/pkg"),
        ("@scope/pkg/sub/file.js", "@scope/pkg"),
        ("fs", None),
        ("fs/promises", None),
        ("node:test", None),
        ("./local", None),
        ("/etc/passwd", None),
    ],
)
def test_a_specifier_names_its_package_and_builtins_or_paths_none(
    specifier: str, package: str | None
) -> None:
    assert package_of(specifier) == package


def test_literal_requires_of_nodejs_code_are_detected_in_every_quoting() -> None:
    found = workspace(
        "const a = require('a'); const b = require(\"b/sub\");",
        "return require(`@s/c`) + require ( 'd' ) + require('crypto') + require(name) + require(`e${x}`);",
    )
    python = Function("import f", language=Language.PYTHON)
    assert required_packages(found.with_function("py", python)) == ["@s/c", "a", "b", "d"]


def test_unpinned_packages_get_latest_and_dependencies_pin_and_add() -> None:
    found = workspace("require('a'); require('b');", dependencies={"b": "^1.2.0", "extra": "2.x"})
    assert wanted_packages(found, PackageRules(), nothing_shared) == {
        "a": "*",
        "b": "^1.2.0",
        "extra": "2.x",
    }


def test_shared_modules_are_not_installed_unless_pinned() -> None:
    found = workspace("require('shared'); require('pinned');", dependencies={"pinned": "1.0.0"})
    assert wanted_packages(found, PackageRules(), lambda name: True) == {"pinned": "1.0.0"}


@pytest.mark.parametrize(
    "spec", ["file:/etc", "git+ssh://x/y.git", "https://x/y.tgz", "npm:evil@1", "a/b", ""]
)
def test_a_spec_that_is_not_a_version_or_tag_is_refused(spec: str) -> None:
    with pytest.raises(DependencyError, match="expected a version"):
        wanted_packages(workspace(dependencies={"x": spec}), PackageRules(), nothing_shared)


def test_an_invalid_package_name_is_refused() -> None:
    with pytest.raises(DependencyError, match="not a valid npm package name"):
        wanted_packages(workspace("require('has space')"), PackageRules(), nothing_shared)


def test_the_blacklist_wins_over_the_whitelist_and_names_its_rule() -> None:
    rules = PackageRules(allow=["a", "b"], deny=["b"])
    assert wanted_packages(workspace("require('a')"), rules, nothing_shared) == {"a": "*"}
    with pytest.raises(DependencyError, match="NODEJS_PACKAGES_BLACKLIST_IMPORT") as refused:
        wanted_packages(workspace("require('b')"), rules, nothing_shared)
    assert refused.value.details == {"package": "b", "rule": "NODEJS_PACKAGES_BLACKLIST_IMPORT"}
    with pytest.raises(DependencyError, match="not in NODEJS_PACKAGES_WHITELIST_IMPORT") as refused:
        wanted_packages(workspace(dependencies={"c": "1"}), rules, nothing_shared)
    assert refused.value.details["package"] == "c"


def test_disable_npm_registry_allows_only_builtins_and_shared_modules() -> None:
    off = workspace("require('crypto'); require('shared');", off=True)
    assert wanted_packages(off, PackageRules(), lambda name: name == "shared") == {}
    with pytest.raises(DependencyError, match="disableNpmRegistry") as refused:
        wanted_packages(workspace("require('lodash')", off=True), PackageRules(), nothing_shared)
    assert refused.value.details["rule"] == "disableNpmRegistry"


def test_a_blacklisted_package_pulled_in_by_another_is_refused_too() -> None:
    refused_dependencies(PackageRules(allow=["a"]), ["a", "b"])  # the whitelist is for what code requires
    with pytest.raises(DependencyError, match="'b' is refused"):
        refused_dependencies(PackageRules(deny=["b"]), ["a", "b"])


def test_npm_sees_its_own_settings_and_the_machines_paths_but_not_the_services_secrets() -> None:
    environ = {
        "PATH": "/bin",
        "NPM_CONFIG_REGISTRY": "http://r",
        "npm_config_cache": "/c",
        "FUNCTIONS_API_KEY": "s",
    }
    assert dict(npm_environment(environ)) == {
        "PATH": "/bin",
        "NPM_CONFIG_REGISTRY": "http://r",
        "npm_config_cache": "/c",
    }


def test_npm_install_timeout_defaults_to_300_seconds_and_must_be_positive() -> None:
    assert load_settings({}).npm_install_timeout_s == 300
    assert load_settings({"NPM_INSTALL_TIMEOUT": "5"}).npm_install_timeout_s == 5
    with pytest.raises(SettingsError, match="NPM_INSTALL_TIMEOUT"):
        load_settings({"NPM_INSTALL_TIMEOUT": "0"})
