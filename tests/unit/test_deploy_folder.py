"""`functions deploy`: how a folder becomes a save body, and how a change is summed up."""

import re
from pathlib import Path

import pytest

from entrypoints.cli.deploy import DeployError, changes, read_folder


def folder_with(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "demo"
    folder.mkdir()
    for name, text in files.items():
        (folder / name.replace("_yaml", ".yaml").replace("_js", ".js").replace("_py", ".py")).write_text(text)
    return folder


def test_each_js_and_py_file_becomes_a_function_named_by_its_stem(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, hello_js="return 1;", stats_py="return 2", notes_txt="ignored")
    assert read_folder(folder) == {
        "functions": {"hello": {"code": "return 1;"}, "stats": {"code": "return 2", "language": "python"}}
    }


def test_workspace_yaml_adds_parameters_dependencies_and_options(tmp_path: Path) -> None:
    options = (
        "functions:\n  hello:\n    parameters: {name: {type: string}}\n"
        "dependencies: {lodash: ^4.17.21}\ndisableNpmRegistry: true\n"
    )
    folder = folder_with(tmp_path, hello_js="return name;", workspace_yaml=options)
    assert read_folder(folder) == {
        "functions": {"hello": {"code": "return name;", "parameters": {"name": {"type": "string"}}}},
        "dependencies": {"lodash": "^4.17.21"},
        "disableNpmRegistry": True,
    }


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({}, "no *.js or *.py files"),
        ({"a_js": "1", "a_py": "2"}, "would both be function 'a'"),
        ({"a_js": "1", "workspace_yaml": "functions: {b: {}}"}, "describes b, with no b.js"),
        ({"a_js": "1", "workspace_yaml": "[1, 2]"}, "must be a mapping"),
        ({"a_js": "1", "workspace_yaml": "functions: {a: ["}, "not valid YAML"),
    ],
)
def test_a_folder_that_cannot_be_a_workspace_says_why(
    tmp_path: Path, files: dict[str, str], says: str
) -> None:
    with pytest.raises(DeployError, match=re.escape(says)):
        read_folder(folder_with(tmp_path, **files))


def test_a_missing_folder_and_an_unreadable_file_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DeployError, match="no folder .*nowhere"):
        read_folder(tmp_path / "nowhere")
    folder = folder_with(tmp_path, a_js="1")
    (folder / "b.js").write_bytes(b"\xff\xfe")
    with pytest.raises(DeployError, match=r"cannot read .*b\.js: not UTF-8"):
        read_folder(folder)
    (folder / "b.js").unlink()

    def refuse(path: Path, encoding: str) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(DeployError, match=r"cannot read .*a\.js: Permission denied"):
        read_folder(folder)


def test_changes_list_functions_dependencies_and_options_added_removed_or_changed() -> None:
    before = {
        "functions": {"keep": {"code": "1"}, "edit": {"code": "1"}, "gone": {"code": "1"}},
        "dependencies": {"a": "1"},
    }
    after = {
        "functions": {"keep": {"code": "1"}, "edit": {"code": "2", "parameters": {}}, "new": {"code": "1"}},
        "dependencies": {"a": "2", "b": "1"},
        "disableNpmRegistry": True,
    }
    assert changes(before, after) == [
        "~ function edit: code, parameters",
        "- function gone",
        "+ function new",
        "~ dependency a: 1 -> 2",
        "+ dependency b 1",
        "~ disableNpmRegistry: None -> True",
    ]
    assert changes(after, after) == []
    assert changes(None, after) == ["+ function edit", "+ function keep", "+ function new"]
