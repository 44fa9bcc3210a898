"""Which npm packages a workspace needs, and whether the rules allow them (pure: no I/O).

Detection is textual: every `require('<literal>')` and `import('<literal>')` in a nodejs function's code
counts, even one in a comment. A `require(variable)` or `import(variable)` is not seen, so its package must
be named in `dependencies`.
"""

import re
from collections.abc import Callable, Collection, Iterable

from attrs import field, frozen

from domain.errors import DependencyError
from domain.model import Workspace

# `require('x')`, and `import('x')` or `import('x', {with: ...})`; not `.import(...)` (a method of that name).
REQUIRE = re.compile(
    r"""(?:\brequire\s*\(|(?<![\w$.])import\s*\()\s*(?:'([^'\\\n]+)'|"([^"\\\n]+)"|`([^`\\$\n]+)`)\s*[,)]"""
)
PACKAGE_NAME = re.compile(r"(@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*", re.IGNORECASE)
# Version ranges and dist-tags only: a `file:`, git, URL or `npm:` alias spec would install code from
# elsewhere on the machine or slip a refused package in under another name.
VERSION_SPEC = re.compile(r"[A-Za-z0-9 .^~<>=|*+_-]{1,100}")
# Not the `latest` tag: npm re-resolves a tag on every install, while `*` lets the lockfile keep the version
# installed first (npm picks the `latest` version for a fresh `*`).
UNPINNED = "*"
# require('module').builtinModules of Node 20-24 without the `node:`-only ones; bare names only.
NODE_BUILTINS = frozenset(
    """assert async_hooks buffer child_process cluster console constants crypto dgram diagnostics_channel
    dns domain events fs http http2 https inspector module net os path perf_hooks process punycode
    querystring readline repl stream string_decoder sys timers tls trace_events tty url util v8 vm wasi
    worker_threads zlib""".split()
)
WHITELIST = "NODEJS_PACKAGES_WHITELIST_IMPORT"
BLACKLIST = "NODEJS_PACKAGES_BLACKLIST_IMPORT"
NO_REGISTRY = "disableNpmRegistry"


def _frozen_or_none(names: Iterable[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(names)


def _frozen(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


@frozen
class PackageRules:
    """NODEJS_PACKAGES_WHITELIST_IMPORT (None: any package) and NODEJS_PACKAGES_BLACKLIST_IMPORT (wins)."""

    allow: frozenset[str] | None = field(default=None, converter=_frozen_or_none)
    deny: frozenset[str] = field(default=frozenset(), converter=_frozen)

    def check(self, name: str) -> None:
        if name in self.deny:
            raise refused(name, BLACKLIST, f"package {name!r} is refused: it is in {BLACKLIST}")
        if self.allow is not None and name not in self.allow:
            allowed = ", ".join(sorted(self.allow)) or "none"
            raise refused(name, WHITELIST, f"package {name!r} is not in {WHITELIST} (allowed: {allowed})")


def refused(name: str, rule: str, message: str) -> DependencyError:
    return DependencyError(message, package=name, rule=rule)


def package_of(specifier: str) -> str | None:
    """The package a require() or import() specifier names (`x/sub` -> `x`, `@a/b/c` -> `@a/b`); None for a
    builtin, a path, a `#import` or a URL (`node:`, `file:`, `data:`...), which are not installed."""
    if specifier.startswith((".", "/", "#")) or ":" in specifier.split("/")[0]:
        return None
    parts = specifier.split("/")
    name = "/".join(parts[:2]) if specifier.startswith("@") else parts[0]
    return None if name in NODE_BUILTINS else name


def required_packages(workspace: Workspace) -> list[str]:
    """The packages the workspace's nodejs code names in require('<x>') or import('<x>'), sorted."""
    found: set[str] = set()
    for fn in workspace.functions_in_nodejs().values():
        for match in REQUIRE.finditer(fn.code):
            name = package_of(next(group for group in match.groups() if group))
            if name is not None:
                found.add(name)
    return sorted(found)


def check_name(name: str) -> str:
    if not PACKAGE_NAME.fullmatch(name) or len(name) > 214:
        raise DependencyError(f"{name!r} is not a valid npm package name", package=name)
    return name


def check_spec(name: str, spec: str) -> str:
    if not isinstance(spec, str) or not VERSION_SPEC.fullmatch(spec.strip()):
        raise DependencyError(
            f"dependencies[{name!r}] = {spec!r}: expected a version, a range such as ^4.17.21 or a dist-tag "
            "(no file:, git, URL or npm: alias specs)",
            package=name,
        )
    return spec.strip()


def wanted_packages(
    workspace: Workspace, rules: PackageRules, shared: Callable[[str], bool]
) -> dict[str, str]:
    """Package name -> version spec to install for the workspace; DependencyError naming the package and
    the rule when one is not allowed. Packages in the shared modules folder are not installed, unless the
    workspace pins them in `dependencies`."""
    pinned = {
        check_name(name): check_spec(name, spec) for name, spec in (workspace.dependencies or {}).items()
    }
    required = [check_name(name) for name in required_packages(workspace)]
    wanted = {name: UNPINNED for name in required if not shared(name)} | pinned
    if workspace.disable_npm_registry and wanted:
        name = sorted(wanted)[0]
        raise refused(
            name,
            NO_REGISTRY,
            f"package {name!r} cannot be installed: {NO_REGISTRY} is true for this workspace, so only Node "
            "builtins and shared modules can be required",
        )
    for name in sorted(wanted):
        rules.check(name)
    return wanted


def refused_dependencies(rules: PackageRules, installed: Collection[str]) -> None:
    """Packages pulled in by others obey the blacklist too (the whitelist is for what code requires)."""
    for name in sorted(installed):
        if name in rules.deny:
            raise refused(
                name, BLACKLIST, f"package {name!r} is refused: it is in {BLACKLIST} (a dependency)"
            )
