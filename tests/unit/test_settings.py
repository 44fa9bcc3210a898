from pathlib import Path

import pytest

from entrypoints.settings import NODE_BUILTINS, PYTHON_BUILTINS, Settings, SettingsError, load_settings


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({}, tty=False)
    assert (settings.port, settings.host) == (4000, "127.0.0.1")
    assert settings.storage_dir == Path("data/functions/")
    assert (settings.node_timeout_ms, settings.python_timeout_ms) == (20_000, 20_000)
    assert settings.workers_max_lru == 500
    assert settings.node_builtin_modules == NODE_BUILTINS
    assert "crypto" in settings.node_builtin_modules
    assert settings.npm_registry is None and settings.python_api_url is None
    assert (settings.node_max_old_generation_mb, settings.node_idle_timeout_s) == (100, 3600)
    assert settings.update_scripts_on_startup is False
    assert settings.request_max_size == 1024 * 1024
    assert settings.kernel_pool_size >= 2
    assert "json" in settings.python_builtin_modules and "os" not in settings.python_builtin_modules
    assert settings.python_packages_whitelist[:2] == ("numpy", "pandas")
    assert settings.python_packages_auto_install == ()
    assert settings.python_packages_dir == Path("data/functions-py/packages/")
    assert settings.python_worker_max_memory_mb == 512
    assert settings.nodejs_packages_whitelist is None and settings.nodejs_packages_blacklist == ()
    assert settings.shared_node_modules_dir is None and settings.api_key is None
    assert (settings.log_level, settings.log_format) == ("info", "json")


def test_the_defaults_of_the_class_and_of_an_empty_environment_agree() -> None:
    assert load_settings({}, tty=False) == Settings()


def test_the_python_builtins_default_is_the_safe_list() -> None:
    assert len(PYTHON_BUILTINS) == len(set(PYTHON_BUILTINS)) == 61
    assert "cmath" in PYTHON_BUILTINS
    assert not {"os", "sys", "subprocess", "socket", "importlib", "pickle"} & set(PYTHON_BUILTINS)


def test_log_format_defaults_to_console_on_a_terminal() -> None:
    assert load_settings({}, tty=True).log_format == "console"
    assert load_settings({"LOG_FORMAT": "json"}, tty=True).log_format == "json"


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("1mb", 1 << 20),
        ("500kb", 500 * 1024),
        ("20MB", 20 << 20),
        ("1.5mb", int(1.5 * (1 << 20))),
        ("2048", 2048),
        ("10b", 10),
        ("1gb", 1 << 30),
        ("1tb", 1 << 40),
        (" 3 Kb ", 3072),
    ],
)
def test_request_max_size_reads_body_parser_sizes(raw: str, size: int) -> None:
    assert load_settings({"REQUEST_MAX_SIZE": raw}).request_max_size == size


@pytest.mark.parametrize(
    ("raw", "value"), [("yes", True), ("TRUE", True), ("1", True), ("No", False), ("0", False)]
)
def test_booleans_read_yes_true_1_and_no_false_0(raw: str, value: bool) -> None:
    assert load_settings({"UPDATE_SCRIPTS_ON_STARTUP": raw}).update_scripts_on_startup is value


def test_comma_lists_are_stripped_and_empty_items_dropped() -> None:
    settings = load_settings(
        {"NODE_BUILTIN_MODULES": " fs , path,, node:os ,", "NODEJS_PACKAGES_BLACKLIST_IMPORT": ""}
    )
    assert settings.node_builtin_modules == ("fs", "path", "node:os")
    assert settings.nodejs_packages_blacklist == ()


def test_nodejs_builtin_modules_is_an_alias_and_the_main_name_wins() -> None:
    assert load_settings({"NODEJS_BUILTIN_MODULES": "fs"}).node_builtin_modules == ("fs",)
    both = {"NODE_BUILTIN_MODULES": "path", "NODEJS_BUILTIN_MODULES": "fs"}
    assert load_settings(both).node_builtin_modules == ("path",)


def test_pip_requirements_keep_their_comma_separated_version_ranges() -> None:
    settings = load_settings({"PYTHON_PACKAGES_AUTO_INSTALL": "numpy>=1.26,<2, tabulate ,requests==2.32.3"})
    assert settings.python_packages_auto_install == ("numpy>=1.26,<2", "tabulate", "requests==2.32.3")


def test_every_variable_is_read_into_its_field() -> None:
    settings = load_settings(
        {
            "PORT": "8080",
            "HOST": "0.0.0.0",
            "FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH": "/srv/functions",
            "FUNCTIONS_RUN_TIMEOUT": "1500",
            "PYTHON_FUNCTIONS_RUN_TIMEOUT": "2500",
            "FUNCTIONS_WORKERS_MAX_LRU": "7",
            "NPM_CONFIG_REGISTRY": "https://npm.example.test/",
            "NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB": "64",
            "INACTIVE_NODE_WORKER_DELETION_TIMEOUT": "60",
            "PYTHON_API_URL": "http://python:8000",
            "KERNEL_POOL_SIZE": "3",
            "PYTHON_BUILTIN_MODULES": "json, xml.etree",
            "PYTHON_PACKAGES_WHITELIST_IMPORT": "numpy",
            "PYTHON_PACKAGES_DIR": "/srv/py",
            "PYTHON_WORKER_MAX_MEMORY_MB": "256",
            "NODEJS_PACKAGES_WHITELIST_IMPORT": "lodash, @scope/pkg",
            "NODEJS_PACKAGES_BLACKLIST_IMPORT": "left-pad",
            "SHARED_NODE_MODULES_DIRECTORY": "/srv/shared",
            "FUNCTIONS_API_KEY": "s3cret",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "console",
        }
    )
    assert settings == Settings(
        port=8080,
        host="0.0.0.0",
        storage_dir=Path("/srv/functions"),
        node_timeout_ms=1500,
        python_timeout_ms=2500,
        workers_max_lru=7,
        npm_registry="https://npm.example.test/",
        node_max_old_generation_mb=64,
        node_idle_timeout_s=60,
        python_api_url="http://python:8000",
        kernel_pool_size=3,
        python_builtin_modules=("json", "xml.etree"),
        python_packages_whitelist=("numpy",),
        python_packages_dir=Path("/srv/py"),
        python_worker_max_memory_mb=256,
        nodejs_packages_whitelist=("lodash", "@scope/pkg"),
        nodejs_packages_blacklist=("left-pad",),
        shared_node_modules_dir=Path("/srv/shared"),
        api_key="s3cret",
        log_level="debug",
        log_format="console",
    )


def test_an_empty_optional_value_means_unset() -> None:
    settings = load_settings(
        {"PYTHON_API_URL": "", "FUNCTIONS_API_KEY": " ", "NODEJS_PACKAGES_WHITELIST_IMPORT": ""}
    )
    assert (settings.python_api_url, settings.api_key, settings.nodejs_packages_whitelist) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("PORT", "abc", "whole number"),
        ("PORT", "70000", "at most 65535"),
        ("PORT", "", "whole number"),
        ("FUNCTIONS_RUN_TIMEOUT", "-5", "milliseconds"),
        ("FUNCTIONS_RUN_TIMEOUT", "0", "at least 1"),
        ("FUNCTIONS_RUN_TIMEOUT", "1.5", "whole number"),
        ("PYTHON_FUNCTIONS_RUN_TIMEOUT", "1e3", "whole number"),
        ("FUNCTIONS_WORKERS_MAX_LRU", "0", "at least 1"),
        ("NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB", "big", "megabytes"),
        ("INACTIVE_NODE_WORKER_DELETION_TIMEOUT", "0", "seconds"),
        ("KERNEL_POOL_SIZE", "-1", "whole number"),
        ("PYTHON_WORKER_MAX_MEMORY_MB", "0", "at least 1"),
        ("REQUEST_MAX_SIZE", "abc", "1mb"),
        ("REQUEST_MAX_SIZE", "-1mb", "1mb"),
        ("REQUEST_MAX_SIZE", "0", "at least 1 byte"),
        ("REQUEST_MAX_SIZE", "5 pb", "1mb"),
        ("UPDATE_SCRIPTS_ON_STARTUP", "maybe", "yes, true, 1, no, false, 0"),
        ("UPDATE_SCRIPTS_ON_STARTUP", "", "yes, true"),
        ("LOG_LEVEL", "verbose", "debug, info, warning, error"),
        ("LOG_FORMAT", "xml", "json, console"),
        ("HOST", " ", "non-empty"),
        ("FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH", "", "non-empty"),
        ("NPM_CONFIG_REGISTRY", "registry.local", "http:// or https:// URL"),
        ("PYTHON_API_URL", "ftp://python", "http:// or https:// URL"),
        ("NODE_BUILTIN_MODULES", "fs, child process", "child process"),
        ("NODEJS_BUILTIN_MODULES", "Fs!", "Fs!"),
        ("PYTHON_BUILTIN_MODULES", "json, os.path-x", "os.path-x"),
        ("PYTHON_PACKAGES_WHITELIST_IMPORT", "1numpy", "1numpy"),
        ("PYTHON_PACKAGES_AUTO_INSTALL", "numpy, -e .", "-e ."),
        ("NODEJS_PACKAGES_WHITELIST_IMPORT", "Lodash", "Lodash"),
        ("NODEJS_PACKAGES_BLACKLIST_IMPORT", "a b", "a b"),
    ],
)
def test_an_invalid_value_stops_start_up_naming_the_variable_value_and_expectation(
    name: str, raw: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: raw})
    message = str(caught.value)
    assert name in message and repr(raw) in message and expected in message


def test_settings_read_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4321")
    assert load_settings().port == 4321


def test_the_walls_mode_is_read_under_its_former_name_too() -> None:
    assert load_settings({"FUNCTIONS_WALLS": "strict"}, tty=False).walls == "strict"
    assert load_settings({"FUNCTIONS_SANDBOX": "strict"}, tty=False).walls == "strict"
    both = {"FUNCTIONS_WALLS": "standard", "FUNCTIONS_SANDBOX": "strict"}
    assert load_settings(both, tty=False).walls == "standard"  # the current name wins
