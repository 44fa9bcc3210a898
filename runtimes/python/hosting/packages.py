"""Which installed distributions ship compiled extension modules: a workspace that imports one runs in a
kernel of its own (compiled extensions may not load in a subinterpreter, or only in one per process)."""

import functools
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from typing import NamedTuple

EXTENSION_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd")
REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def compiled_code(module: str) -> str | None:
    """The installed distribution that ships compiled extension modules among those `module` needs: its
    own distribution and, through their Requires-Dist, every one they require (python-docx: lxml), or
    None. Compiled extensions may not load in a subinterpreter, or only in one per process."""
    if module in sys.stdlib_module_names:
        return None
    todo = list(distributions_of(module))
    if not todo:  # no metadata (a folder put on the path by hand): look at its files
        return module if native_folder(module) else None
    seen: set[str] = set()
    while todo:
        facts = distribution_facts(todo.pop(0))
        if facts is None or facts.name in seen:
            continue
        seen.add(facts.name)
        if facts.compiled:
            return facts.name
        todo.extend(facts.requires)
    return None


@functools.cache
def distributions_of(module: str) -> tuple[str, ...]:
    return tuple(packages_distributions().get(module, ()))


@functools.cache
def packages_distributions() -> Mapping[str, list[str]]:
    import importlib.metadata  # on demand: only a kernel asked about packages pays for it

    return importlib.metadata.packages_distributions()


class Facts(NamedTuple):
    name: str
    compiled: bool
    requires: tuple[str, ...]


@functools.cache
def distribution_facts(name: str) -> Facts | None:
    """Whether an installed distribution ships compiled extensions, and what it requires (cached)."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None  # an optional dependency that is not installed
    files = distribution.files
    if files is None:  # no RECORD (some system packages): its top-level folders
        tops = (distribution.read_text("top_level.txt") or "").split()
        compiled = any(native_folder(top) for top in tops)
    else:
        compiled = any(str(path).endswith(EXTENSION_SUFFIXES) for path in files)
    requires = []
    for requirement in distribution.requires or ():
        spec, _, marker = requirement.partition(";")
        found = REQUIREMENT_NAME.match(spec)
        if found and "extra" not in marker:  # extras are asked for by name, never implied
            requires.append(found.group(1))
    canonical = re.sub(r"[-_.]+", "-", distribution.metadata["Name"] or name).lower()
    return Facts(canonical, compiled, tuple(requires))


def native_folder(module: str) -> bool:
    """Whether an importable module's files include compiled extensions."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or module in sys.stdlib_module_names:
        return False
    origins = [spec.origin or ""]
    for folder in spec.submodule_search_locations or ():
        for _root, _dirs, files in os.walk(folder):
            origins.extend(files)
    return any(name.endswith(EXTENSION_SUFFIXES) for name in origins)
