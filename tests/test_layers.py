"""The import rules of STYLE §1, checked with `ast`: each layer uses only the layers below it."""

import ast
import re
import sys
from pathlib import Path

import pytest
from attrs import frozen

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"domain", "ports", "application", "adapters", "entrypoints", "runtimes", "tests"}
STDLIB = set(sys.stdlib_module_names)


@frozen
class Rule:
    """What files of one layer may import: project packages, and third-party packages (None: any)."""

    project: frozenset[str]
    third_party: frozenset[str] | None


RULES = {
    # cattrs: the workspace body <-> Workspace converter (domain/body.py) is a pure conversion
    "domain": Rule(frozenset({"domain"}), frozenset({"attrs", "attr", "cattrs"})),
    "ports": Rule(frozenset({"domain"}), frozenset({"attrs", "attr"})),  # attrs: the records a port carries
    "application": Rule(frozenset({"domain", "ports", "application"}), frozenset({"attrs", "attr"})),
    "adapters": Rule(frozenset({"domain", "ports", "adapters"}), None),
    "runtimes": Rule(frozenset({"runtimes"}), None),  # its own modules (relative imports)
    "entrypoints": Rule(frozenset({"domain", "ports", "application", "adapters", "entrypoints"}), None),
}
EXCEPTIONS: dict[str, Rule] = {}
# adapters/<one>/ may use its own modules and the host plumbing (adapters/hosts), never another adapter.
SHARED_ADAPTERS = {"hosts"}


def python_files(layer: str) -> list[Path]:
    return sorted(p for p in (ROOT / layer).rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path) -> set[str]:
    """Top-level names of every module the file imports; relative imports count as its own package."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(path.relative_to(ROOT).parts[0] if node.level else (node.module or "").split(".")[0])
    return names


def layered_files() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in RULES for path in python_files(layer)]


@pytest.mark.parametrize(
    ("layer", "path"), layered_files(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else ""
)
def test_each_file_imports_only_what_its_layer_may(layer: str, path: Path) -> None:
    rule = EXCEPTIONS.get(path.relative_to(ROOT).as_posix(), RULES[layer])
    names = imported(path) - STDLIB - {"__future__"}
    assert names & PROJECT <= rule.project, f"{path.name} imports {sorted(names & PROJECT - rule.project)}"
    if rule.third_party is not None:
        third_party = names - PROJECT
        assert third_party <= rule.third_party, (
            f"{path.name} imports {sorted(third_party - rule.third_party)}"
        )


def test_the_layers_have_files_to_check() -> None:
    assert all(python_files(layer) for layer in RULES)


def adapter_imports(path: Path) -> set[str]:
    """The adapters/<name> packages a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            parts = node.module.split(".")
            if parts[0] == "adapters":
                names |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("adapters.")}
    return names


@pytest.mark.parametrize("path", python_files("adapters"), ids=lambda p: str(p.relative_to(ROOT)))
def test_an_adapter_uses_only_itself_and_the_host_plumbing(path: Path) -> None:
    own = path.relative_to(ROOT / "adapters").parts
    assert len(own) == 2 or own == ("__init__.py",), f"{path} is not in an adapter's folder"
    assert adapter_imports(path) <= {own[0], *SHARED_ADAPTERS}


LAYER_README = re.compile(r"^May import: (.*)$", re.M)


@pytest.mark.parametrize("layer", sorted(RULES))
def test_each_layer_says_what_lives_there_and_what_it_may_import(layer: str) -> None:
    readme = ROOT / layer / "README.md"
    assert readme.is_file(), f"{layer}/ has no README.md"
    found = LAYER_README.search(readme.read_text(encoding="utf-8"))
    assert found, f"{layer}/README.md has no 'May import:' line"
    said = {name.split(" (")[0].strip(" `.") for name in found.group(1).split(",")}
    allowed = set(RULES[layer].project) | {"the standard library"}
    third_party = RULES[layer].third_party
    allowed |= {"any installed package"} if third_party is None else third_party - {"attr"}
    assert said == allowed, f"{layer}/README.md says {sorted(said)}, the rule is {sorted(allowed)}"


# `time` and the I/O modules: the domain never reads the clock or touches a file, socket or process.
DOMAIN_FORBIDDEN_MODULES = {"os", "pathlib", "socket", "subprocess", "shutil", "io", "time", "tempfile"}
CLOCK_CALLS = {"now", "utcnow", "today"}


@pytest.mark.parametrize("path", python_files("domain"), ids=lambda p: p.name)
def test_the_domain_does_no_io_and_reads_no_clock(path: Path) -> None:
    assert not imported(path) & DOMAIN_FORBIDDEN_MODULES
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            called = node.func
            assert not (isinstance(called, ast.Name) and called.id in {"open", "print", "input"}), (
                ast.unparse(node)
            )
            assert not (isinstance(called, ast.Attribute) and called.attr in CLOCK_CALLS), ast.unparse(node)


@pytest.mark.parametrize("path", python_files("entrypoints"), ids=lambda p: p.name)
def test_only_the_settings_module_reads_the_environment(path: Path) -> None:
    if path.name != "settings.py":
        assert not re.search(r"\bos\.(environ|getenv)\b|\bgetenv\(", path.read_text(encoding="utf-8"))


# import ... from 'x', import 'x', import('x'), export ... from 'x', require('x')
SPECIFIER = re.compile(r"""(?:\bfrom|\bimport|\bimport\s*\(|\brequire\s*\()\s*(['"])([^'"\n]+)\1""")
RUNTIMES = ROOT / "runtimes"


def module_files() -> list[Path]:
    return sorted(RUNTIMES.rglob("*.mjs")) + sorted(RUNTIMES.rglob("*.js"))


@pytest.mark.parametrize("path", module_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_scripts_import_nothing_outside_runtimes(path: Path) -> None:
    for _, specifier in SPECIFIER.findall(path.read_text(encoding="utf-8")):
        assert not specifier.startswith(("/", "file:")), f"{path.name} imports {specifier}"
        if specifier.startswith("."):
            target = (path.parent / specifier).resolve()
            assert target.is_relative_to(RUNTIMES), f"{path.name} imports {specifier}"
