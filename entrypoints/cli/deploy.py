"""`functions deploy DIR`: a folder of *.js and *.py files becomes a workspace's save body.

Each file is one function named by its stem (`hello.js` -> `hello`). An optional `workspace.yaml` in
the folder adds what code cannot say: each function's parameters (and other keys), and the
workspace's dependencies and options, in the save body's own shape:

    functions:
      hello:
        parameters: {name: {type: string, default: world}}
    dependencies: {lodash: ^4.17.21}
"""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

OPTIONS_FILE = "workspace.yaml"
LANGUAGES = {".js": "nodejs", ".py": "python"}


class DeployError(Exception):
    """The folder cannot become a workspace; the message says which file and why."""


def read_folder(folder: Path) -> dict[str, Any]:
    """The save body for `folder`; DeployError for a missing folder, unreadable file or bad options."""
    if not folder.exists():
        raise DeployError(f"no folder {folder}")
    if not folder.is_dir():
        raise DeployError(f"{folder} is not a folder")
    options = _options(folder / OPTIONS_FILE)
    described = options.pop("functions", None) or {}
    if not isinstance(described, dict):
        raise DeployError(f"{folder / OPTIONS_FILE}: 'functions' must be a mapping of name -> options")
    functions = dict(_functions(folder, described))
    if not functions:
        raise DeployError(f"no *.js or *.py files in {folder}")
    if missing := sorted(set(described) - set(functions)):
        names = ", ".join(missing)
        raise DeployError(f"{folder / OPTIONS_FILE} describes {names}, with no {missing[0]}.js or .py file")
    return {**options, "functions": functions}


def _functions(folder: Path, described: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    seen: dict[str, Path] = {}
    for file in sorted(f for f in folder.iterdir() if f.suffix in LANGUAGES and f.is_file()):
        if file.stem in seen:
            raise DeployError(f"{seen[file.stem].name} and {file.name} would both be function {file.stem!r}")
        seen[file.stem] = file
        extra = described.get(file.stem) or {}
        if not isinstance(extra, dict):
            raise DeployError(f"{folder / OPTIONS_FILE}: functions.{file.stem} must be a mapping")
        function = {**extra, "code": _text(file)}
        if file.suffix == ".py" or "language" in extra:  # the file's kind wins over what the options say
            function["language"] = LANGUAGES[file.suffix]
        yield file.stem, function


def _text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DeployError(f"cannot read {file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DeployError(f"cannot read {file}: {exc.strerror or exc}") from None


def _options(file: Path) -> dict[str, Any]:
    if not file.exists():
        return {}
    try:
        options = YAML(typ="safe", pure=True).load(_text(file))
    except YAMLError as exc:
        raise DeployError(f"{file} is not valid YAML: {exc}") from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise DeployError(f"{file} must be a mapping (functions, dependencies, ...)")
    return dict(options)


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """What saving `after` over `before` changes, one line each (`+` added, `-` removed, `~` changed)."""
    if before is None:
        return [f"+ function {name}" for name in sorted(after["functions"])]
    lines = _compared("function", before.get("functions") or {}, after["functions"], _what_differs)
    lines += _compared("dependency", before.get("dependencies") or {}, after.get("dependencies") or {})
    keys = (set(before) | set(after)) - {"functions", "dependencies"}
    lines += [
        f"~ {key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(keys)
        if before.get(key) != after.get(key)
    ]
    return lines


def _compared(
    kind: str, before: Mapping[str, Any], after: Mapping[str, Any], detail: Any = None
) -> list[str]:
    lines = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            lines.append(f"+ {kind} {name}" + ("" if detail else f" {after[name]}"))
        elif name not in after:
            lines.append(f"- {kind} {name}")
        elif before[name] != after[name]:
            what = detail(before[name], after[name]) if detail else f"{before[name]} -> {after[name]}"
            lines.append(f"~ {kind} {name}: {what}")
    return lines


def _what_differs(before: Any, after: Any) -> str:
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "changed"
    return ", ".join(sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))
