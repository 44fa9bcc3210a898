"""`functions versions`, `restore`, `runs` and `run --async`, against a service and on the local storage."""

import json
from pathlib import Path

import pytest

from tests.e2e.history_app import eventually
from tests.e2e.serving import serving
from tests.e2e.test_cli_commands import Cli, logging_kept

pytestmark = pytest.mark.node
__all__ = ["logging_kept"]  # the autouse fixture, kept for these tests too


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "greetings"
    folder.mkdir()
    (folder / "hello.js").write_text('return "Hello " + name;\n')
    (folder / "workspace.yaml").write_text("functions:\n  hello:\n    parameters: {name: {type: string}}\n")
    return folder


def exercise_history_commands(cli: Cli, folder: Path, remote: bool) -> None:
    assert cli("deploy", str(folder))[0] == 0
    (folder / "hello.js").write_text('return "Bye " + name;\n')
    assert cli("deploy", str(folder))[0] == 0
    status, out, err = cli("versions", "greetings")
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["2", "1"] and "(current)" in out.splitlines()[0]

    status, out, err = cli("restore", "greetings", "1")
    assert (status, out) == (0, "restored version 1 of workspace 'greetings' as version 3\n"), err
    status, out, _ = cli("run", "greetings", "hello", "-p", "name=Ada")
    assert (status, json.loads(out)) == (0, "Hello Ada")

    status, out, err = cli("run", "greetings", "hello", "-p", "name=Bo", "--async")
    assert status == 0, err
    run = json.loads(out)
    if remote:  # queued on the service: read it back until it has finished
        assert run["status"] == "queued" and f"--id {run['id']}" in err
        run = eventually(
            lambda: (
                (got := json.loads(cli("runs", "greetings", "--id", run["id"])[1]))["status"] == "succeeded"
                and got
            ),
            "the async run finished",
        )
    assert run["status"] == "succeeded" and run["result"] == "Hello Bo" and run["version"] == 3

    status, out, err = cli("runs", "greetings", "hello", "--limit", "5")
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and "succeeded" in lines[0] and "async" in lines[0] and "sync" in lines[1]
    status, _, err = cli("runs", "greetings", "--status", "done")
    assert status == 1 and "InvalidRequest" in err and "status" in err
    status, _, err = cli("restore", "greetings", "9")
    assert status == 1 and "NotFound" in err


def test_history_commands_against_a_running_service(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(tmp_path / "served") as url:
        exercise_history_commands(Cli(capsys, ["--url", url]), folder, remote=True)


def test_history_commands_on_the_local_storage(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH", str(tmp_path / "local"))
    exercise_history_commands(Cli(capsys, []), folder, remote=False)
