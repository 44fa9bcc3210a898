import pytest

from entrypoints.cli.main import hypercorn_config, main
from entrypoints.settings import Settings


def test_help_lists_the_serve_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "serve" in capsys.readouterr().out


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_a_bad_setting_stops_serve_with_its_message_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REQUEST_MAX_SIZE", "abc")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: REQUEST_MAX_SIZE='abc' is invalid: expected")
    assert "Traceback" not in err


def test_hypercorn_binds_host_and_port_with_the_access_log_off() -> None:
    config = hypercorn_config(Settings(host="0.0.0.0", port=8080))
    assert config.bind == ["0.0.0.0:8080"] and config.accesslog is None
    assert hypercorn_config(Settings(host="::1", port=80)).bind == ["[::1]:80"]
