"""Every `functions` command end to end: against a service started here, and on the local storage."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrypoints.cli.main import main
from tests.e2e.serving import free_port, serving

KEY = "cli-test-key"


@pytest.fixture(autouse=True)
def logging_kept() -> Iterator[None]:
    """The commands configure the root logger, as a CLI should; other tests expect it as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "greetings"
    folder.mkdir()
    (folder / "hello.js").write_text('console.log("greeting", name);\nreturn "Hello " + name;\n')
    (folder / "workspace.yaml").write_text("functions:\n  hello:\n    parameters: {name: {type: string}}\n")
    return folder


class Cli:
    """Runs `functions ...` in this process; answers the exit status, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: list[str]) -> None:
        self.capsys = capsys
        self.url = url

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        status = main([*args, *self.url])
        out, err = self.capsys.readouterr()
        return status, out, err


def exercise_every_command(cli: Cli, folder: Path) -> None:
    status, out, err = cli("deploy", str(folder))
    assert status == 0, err
    assert "saved workspace 'greetings'" in out and "+ function hello" in out
    assert "1 functions (hello)" in err

    status, out, err = cli("run", "greetings", "hello", "-p", "name=Ada")
    assert (status, json.loads(out)) == (0, "Hello Ada"), err
    assert "[log] greeting Ada" in err

    (folder / "hello.js").write_text('return "Hi " + name;')
    (folder / "boom.js").write_text('throw new RangeError("too far");')
    status, out, err = cli("deploy", str(folder), "--workspace", "greetings")
    assert status == 0 and "+ function boom" in out and "~ function hello: code" in out, out + err

    status, out, err = cli("run", "greetings", "hello", "--json", '{"parameters": {"name": "Bo"}}')
    assert (status, json.loads(out)) == (0, "Hi Bo")
    status, out, err = cli("run", "greetings", "boom")
    assert status == 1 and out == "" and "error: FunctionError: too far" in err and "at boom" in err
    status, out, err = cli("run", "greetings", "hello", "-p", "name=7")  # JSON 7: not a string
    assert status == 1 and "InvalidParameters" in err

    assert cli("list")[:2] == (0, "greetings\n")
    status, out, _ = cli("get", "greetings")
    assert status == 0 and json.loads(out)["functions"]["boom"]["code"].startswith("throw")
    assert cli("delete", "greetings")[0] == 0
    assert cli("list")[:2] == (0, "")
    status, _, err = cli("get", "greetings")
    assert status == 1 and "error: NotFound:" in err


@pytest.mark.node
def test_every_command_works_against_a_running_service_with_its_key(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(tmp_path / "served", FUNCTIONS_API_KEY=KEY) as url:
        monkeypatch.setenv("FUNCTIONS_API_KEY", KEY)
        exercise_every_command(Cli(capsys, ["--url", url]), folder)
        monkeypatch.delenv("FUNCTIONS_API_KEY")
        status, _, err = Cli(capsys, ["--url", url])("list")
        assert status == 1 and "error: Unauthorized:" in err


@pytest.mark.node
def test_every_command_works_on_the_local_storage(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH", str(tmp_path / "local"))
    exercise_every_command(Cli(capsys, []), folder)


@pytest.mark.node
def test_migrate_regenerates_every_workspace_and_reports_each(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "local"
    monkeypatch.setenv("FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH", str(storage))
    cli = Cli(capsys, [])
    assert cli("deploy", str(folder))[0] == 0
    (storage / "greetings" / "index.js").unlink()
    status, out, err = cli("migrate")
    assert (status, out) == (0, "greetings: ok\n") and "regenerated 1 of 1 workspaces" in err
    assert (storage / "greetings" / "index.js").exists()


def test_an_unreachable_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = Cli(capsys, ["--url", f"http://127.0.0.1:{free_port()}"])("list")
    assert status == 1 and out == ""
    assert err.startswith("error: cannot reach the service at http://127.0.0.1:") and "Traceback" not in err


def test_deploying_a_missing_folder_fails_before_reaching_any_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = Cli(capsys, ["--url", "http://127.0.0.1:9"])("deploy", str(tmp_path / "nowhere"))
    assert status == 1 and err == f"error: no folder {tmp_path / 'nowhere'}\n"


@pytest.mark.parametrize("run_body", ["{oops", "[1]", '{"parameters": 3}'])
def test_a_bad_run_body_is_a_usage_error(capsys: pytest.CaptureFixture[str], run_body: str) -> None:
    assert main(["run", "w", "f", "--json", run_body, "--url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.startswith("error: --json ")


def test_a_parameter_without_a_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "w", "f", "-p", "novalue"])
    assert exited.value.code == 2 and "expected NAME=VALUE" in capsys.readouterr().err
