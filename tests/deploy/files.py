"""What the deploy tests read: the Containerfile's instructions, the Makefile's install steps and the
Kubernetes manifests, parsed plainly (no container tool or cluster is needed)."""

import json
import re
import shlex
from pathlib import Path
from typing import Any

from attrs import frozen
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
MAKEFILE = ROOT / "Makefile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
NGINX = ROOT / "deploy" / "nginx"
DOCS = ROOT / "docs" / "deploy.md"
# Custom resources: kubernetes-validate has no schema for them (it would only warn), so they are left out
# of its run and checked by the tests' own invariants instead.
CUSTOM_RESOURCES = {Path("monitoring/servicemonitor.yaml")}


@frozen
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    text: str  # the rest, continuation lines joined


def instructions(path: Path = CONTAINERFILE) -> list[Instruction]:
    """A Containerfile's instructions, comments dropped and `\\` continuations joined."""
    found: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, rest = pending.strip().partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(rest.split())))
        pending = ""
    return found


def only(keyword: str) -> Instruction:
    matches = [i for i in instructions() if i.keyword == keyword]
    assert len(matches) == 1, f"expected one {keyword} in the Containerfile, found {len(matches)}"
    return matches[0]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def image_env() -> dict[str, str]:
    """ENV of the Containerfile (the KEY=value form)."""
    env: dict[str, str] = {}
    for instruction in instructions():
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.text):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def image_args() -> dict[str, str]:
    return dict(i.text.split("=", 1) for i in instructions() if i.keyword == "ARG" and "=" in i.text)


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell line joined by `&&` or `;`, each split as the shell would."""
    return [shlex.split(part) for part in re.split(r"&&|;", text) if part.strip()]


def image_commands() -> list[list[str]]:
    return [cmd for i in instructions() if i.keyword == "RUN" for cmd in shell_commands(i.text)]


def make_commands(target: str = "$(VENV)/.installed") -> list[list[str]]:
    """The recipe of one Makefile target, each line split as the shell would (`@` prefixes dropped)."""
    lines = MAKEFILE.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(expand(line.strip().lstrip("@")))
    return [cmd for line in recipe for cmd in shell_commands(line)]


def expand(text: str) -> str:
    """Make's `$(NAME)` for the simple variables of the Makefile (VENV, PY), as often as they nest."""
    simple = {k: v for k, v in make_variables().items() if "$(shell" not in v}
    for _ in range(5):
        text = re.sub(r"\$\((\w+)\)", lambda m: simple.get(m[1], m[0]), text)
    return text


def make_variables() -> dict[str, str]:
    pairs = re.findall(r"^([A-Z_]+) :?= ?(.*)$", MAKEFILE.read_text(), re.MULTILINE)
    return {name: value.strip() for name, value in pairs}


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES.rglob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    loaded = list(YAML(typ="safe").load_all(path.read_text()))
    return [doc for doc in loaded if doc is not None]


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes/, by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} is defined twice"
            found[key] = doc
    return found


def settings_data() -> dict[str, str]:
    data = objects()[("ConfigMap", "functions-settings")]["data"]
    return {str(k): str(v) for k, v in data.items()}


def container() -> dict[str, Any]:
    containers = objects()[("Deployment", "functions")]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    value: dict[str, Any] = containers[0]
    return value
