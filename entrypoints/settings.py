"""Settings from environment variables: the only module that reads the environment.

A bad value stops start-up with a message naming the variable, the value and what was expected; it is
never replaced by a default.
"""

import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from adapters.hosts.egress_policy import MODES as EGRESS_MODES
from adapters.hosts.egress_policy import AllowRule, parse_allow

# None of these reads files, starts anything or reaches the host realm (connections meet the egress wall).
NODE_BUILTINS = tuple(
    "http https url util zlib dns stream buffer crypto "
    "path events timers string_decoder querystring punycode assert".split()
)
PYTHON_BUILTINS = tuple(
    "json csv xml html email re string textwrap unicodedata difflib math cmath decimal fractions random "
    "statistics datetime time calendar collections itertools functools operator array heapq bisect queue "
    "copy enum typing dataclasses abc types io pathlib tempfile glob fnmatch base64 hashlib hmac binascii "
    "struct secrets zlib gzip bz2 lzma zipfile tarfile urllib http logging warnings traceback pprint uuid "
    "contextlib weakref timeit atexit".split()
)
PYTHON_PACKAGES = ("numpy", "pandas", "tabulate", "dateparser", "urllib3", "requests", "pptx", "docx")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "console")


class SettingsError(Exception):
    """An environment variable holds a value the service cannot use."""


def default_pool_size() -> int:
    return max(2, os.cpu_count() or 1)


@frozen
class Settings:
    """The service's configuration; the defaults are SPEC §1's."""

    port: int = 4000
    host: str = "127.0.0.1"
    storage_dir: Path = Path("data/functions/")
    node_timeout_ms: int = 20_000
    python_timeout_ms: int = 20_000
    workers_max_lru: int = 500
    node_builtin_modules: tuple[str, ...] = NODE_BUILTINS
    npm_registry: str | None = None  # None: npm's own default
    node_max_old_generation_mb: int = 100
    node_idle_timeout_s: int = 3600
    update_scripts_on_startup: bool = False
    request_max_size: int = 1024 * 1024
    python_api_url: str | None = None  # None: Python runs embedded
    python_api_port: int = 8000  # `functions python-api` listens on HOST:PYTHON_API_PORT
    kernel_pool_size: int = field(factory=default_pool_size)
    python_builtin_modules: tuple[str, ...] = PYTHON_BUILTINS
    python_packages_whitelist: tuple[str, ...] = PYTHON_PACKAGES
    python_packages_auto_install: tuple[str, ...] = ()
    python_packages_dir: Path = Path("data/functions-py/packages/")
    python_kernel_binary: str | None = None  # None: the newest CPython found (adapters/python/interpreter.py)
    python_worker_max_memory_mb: int = 512
    nodejs_packages_whitelist: tuple[str, ...] | None = None  # None: every package allowed
    nodejs_packages_blacklist: tuple[str, ...] = ()
    shared_node_modules_dir: Path | None = None
    npm_install_timeout_s: int = 300
    # What npm sees of the environment (npm_environment()): passed through, not a setting, so not compared.
    npm_environment: tuple[tuple[str, str], ...] = field(default=(), eq=False)
    api_key: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    metrics_workspace_labels: bool = True  # off: runs counted by language and outcome only
    shutdown_grace_s: int = 25  # the 20 s default run timeout fits, under Kubernetes' 30 s stop grace
    isolation: str = "shared"  # shared: one Node host, the kernel pool; dedicated: hosts per workspace
    walls: str = "standard"  # strict: no host starts with an operating-system wall missing
    nodejs_native_addons: bool = False  # Node's permission model refuses native addons unless this is on
    egress: str = "public"  # public: no loopback, link-local, private or own address; none; all
    egress_allow: tuple[AllowRule, ...] = ()  # FUNCTIONS_EGRESS_ALLOW: reachable whatever the mode
    database_url: str | None = None  # None: the history is SQLite in the storage folder
    versions_kept: int = 20  # saved versions kept per workspace
    run_history: int = 100  # runs kept per workspace; 0: sync runs are not recorded
    run_history_parameters: bool = True  # no: runs keep neither parameters nor results
    max_concurrent_runs: int = 0  # per workspace; 0: no limit


# Parsers take the raw text and raise ValueError("expected ...") when it does not fit.
Parser = Callable[[str], Any]


def integer(minimum: int, maximum: int | None = None, unit: str = "") -> Parser:
    def parse(raw: str) -> int:
        text = raw.strip()
        value = int(text) if text.isascii() and text.isdigit() else None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"expected a whole number{unit} of at least {minimum}{upper}")
        return value

    return parse


SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?", re.IGNORECASE)
UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


def byte_size(raw: str) -> int:
    """body-parser's syntax (the `bytes` package): `1mb`, `500kb`, `1.5mb` or plain bytes; 1kb = 1024."""
    match = SIZE.fullmatch(raw.strip())
    size = int(float(match[1]) * UNITS[(match[2] or "b").lower()]) if match else 0
    if size < 1:
        raise ValueError("expected a size of at least 1 byte such as 1048576, 500kb, 1mb or 1.5gb")
    return size


TRUE, FALSE = ("yes", "true", "1"), ("no", "false", "0")


def boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in TRUE + FALSE:
        raise ValueError("expected one of yes, true, 1, no, false, 0")
    return text in TRUE


def choice(*allowed: str) -> Parser:
    def parse(raw: str) -> str:
        text = raw.strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


def text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a non-empty value")
    return raw.strip()


def path(raw: str) -> Path:
    return Path(text(raw))


def url(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"https?://[^\s/]+\S*", value):
        raise ValueError("expected an http:// or https:// URL")
    return value


def database_url(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"postgres(ql)?://\S+", value):
        raise ValueError("expected a postgresql:// URL (unset: SQLite in the storage folder)")
    return value


def items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def names(pattern: str, what: str) -> Parser:
    """A comma-separated list whose every item must match `pattern`."""
    compiled = re.compile(pattern)

    def parse(raw: str) -> tuple[str, ...]:
        found = items(raw)
        bad = [item for item in found if not compiled.fullmatch(item)]
        if bad:
            raise ValueError(f"expected a comma-separated list of {what}; not one: {', '.join(bad)}")
        return tuple(found)

    return parse


def requirements(raw: str) -> tuple[str, ...]:
    """pip requirements, comma-separated; a comma followed by a version operator (`numpy>=1.26,<2`)
    continues the previous requirement instead of starting a new one."""
    merged: list[str] = []
    for item in items(raw):
        if merged and item[0] in "<>=!~":
            merged[-1] += "," + item
        elif item[0].isalnum():
            merged.append(item)
        else:
            raise ValueError(f"expected comma-separated pip requirements; not one: {item}")
    return tuple(merged)


def optional(parse: Parser) -> Parser:
    """An empty value means unset, as container tools often set `NAME=` for 'no value'."""
    return lambda raw: parse(raw) if raw.strip() else None


MS, MB = " of milliseconds", " of megabytes"
MODULES = names(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", "Python module names")
NODE_MODULES = names(r"(node:)?[a-z_][a-z0-9_/]*", "Node.js builtin module names")
NPM_PACKAGES = names(r"(@[a-z0-9-~][a-z0-9-._~]*/)?[a-z0-9-~][a-z0-9-._~]*", "npm package names")

# (variable names, alias first-wins order), Settings field, parser
VARIABLES: tuple[tuple[tuple[str, ...], str, Parser], ...] = (
    (("PORT",), "port", integer(0, 65535)),
    (("HOST",), "host", text),
    (("FUNCTIONS_STORAGE_FILESYSTEM_DIRPATH",), "storage_dir", path),
    (("FUNCTIONS_RUN_TIMEOUT",), "node_timeout_ms", integer(1, unit=MS)),
    (("PYTHON_FUNCTIONS_RUN_TIMEOUT",), "python_timeout_ms", integer(1, unit=MS)),
    (("FUNCTIONS_WORKERS_MAX_LRU",), "workers_max_lru", integer(1)),
    (("NODE_BUILTIN_MODULES", "NODEJS_BUILTIN_MODULES"), "node_builtin_modules", NODE_MODULES),
    (("NPM_CONFIG_REGISTRY",), "npm_registry", optional(url)),
    (("NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB",), "node_max_old_generation_mb", integer(1, unit=MB)),
    (("INACTIVE_NODE_WORKER_DELETION_TIMEOUT",), "node_idle_timeout_s", integer(1, unit=" of seconds")),
    (("UPDATE_SCRIPTS_ON_STARTUP",), "update_scripts_on_startup", boolean),
    (("REQUEST_MAX_SIZE",), "request_max_size", byte_size),
    (("PYTHON_API_URL",), "python_api_url", optional(url)),
    (("PYTHON_API_PORT",), "python_api_port", integer(0, 65535)),
    (("KERNEL_POOL_SIZE",), "kernel_pool_size", integer(1)),
    (("PYTHON_BUILTIN_MODULES",), "python_builtin_modules", MODULES),
    (("PYTHON_PACKAGES_WHITELIST_IMPORT",), "python_packages_whitelist", MODULES),
    (("PYTHON_PACKAGES_AUTO_INSTALL",), "python_packages_auto_install", requirements),
    (("PYTHON_PACKAGES_DIR",), "python_packages_dir", path),
    (("PYTHON_KERNEL_BINARY",), "python_kernel_binary", optional(text)),
    (("PYTHON_WORKER_MAX_MEMORY_MB",), "python_worker_max_memory_mb", integer(1, unit=MB)),
    (("NODEJS_PACKAGES_WHITELIST_IMPORT",), "nodejs_packages_whitelist", optional(NPM_PACKAGES)),
    (("NODEJS_PACKAGES_BLACKLIST_IMPORT",), "nodejs_packages_blacklist", NPM_PACKAGES),
    (("SHARED_NODE_MODULES_DIRECTORY",), "shared_node_modules_dir", optional(path)),
    (("NPM_INSTALL_TIMEOUT",), "npm_install_timeout_s", integer(1, unit=" of seconds")),
    (("FUNCTIONS_API_KEY",), "api_key", optional(text)),
    (("LOG_LEVEL",), "log_level", choice(*LOG_LEVELS)),
    (("LOG_FORMAT",), "log_format", choice(*LOG_FORMATS)),
    (("METRICS_WORKSPACE_LABELS",), "metrics_workspace_labels", boolean),
    (("SHUTDOWN_GRACE_PERIOD",), "shutdown_grace_s", integer(0, unit=" of seconds")),
    (("FUNCTIONS_ISOLATION",), "isolation", choice("shared", "dedicated")),
    # FUNCTIONS_SANDBOX: its former name, still read
    (("FUNCTIONS_WALLS", "FUNCTIONS_SANDBOX"), "walls", choice("strict", "standard")),
    (("NODEJS_NATIVE_ADDONS",), "nodejs_native_addons", boolean),
    (("FUNCTIONS_EGRESS",), "egress", choice(*EGRESS_MODES)),
    (("FUNCTIONS_EGRESS_ALLOW",), "egress_allow", parse_allow),
    (("FUNCTIONS_DATABASE_URL",), "database_url", optional(database_url)),
    (("FUNCTIONS_VERSIONS_KEPT",), "versions_kept", integer(1)),
    (("FUNCTIONS_RUN_HISTORY",), "run_history", integer(0)),
    (("FUNCTIONS_RUN_HISTORY_PARAMETERS",), "run_history_parameters", boolean),
    (("FUNCTIONS_MAX_CONCURRENT_RUNS",), "max_concurrent_runs", integer(0)),
)


def load_settings(environ: Mapping[str, str] | None = None, *, tty: bool | None = None) -> Settings:
    """Settings from `environ` (the process environment by default); SettingsError names a bad variable.

    `tty` picks the default LOG_FORMAT (console on a terminal, else json); None asks stderr.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {"log_format": "console" if _is_tty(tty) else "json"}
    for names_, field_name, parse in VARIABLES:
        name = next((n for n in names_ if n in environ), None)
        if name is not None:
            values[field_name] = _parse(name, environ[name], parse)
    values["npm_environment"] = npm_environment(environ)
    return Settings(**values)


# Besides npm's own settings (npm_config_*, which may carry a private registry's token), npm sees only what
# finds programs, proxies and certificates: never the service's secrets such as FUNCTIONS_API_KEY.
NPM_PASSTHROUGH = frozenset(
    "PATH HOME LANG TMPDIR HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy "
    "NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR".split()
)


def npm_environment(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables the npm of dependency installs runs with."""
    passed = (k for k in environ if k in NPM_PASSTHROUGH or k.lower().startswith("npm_config_"))
    return tuple(sorted((k, environ[k]) for k in passed))


def _parse(name: str, raw: str, parse: Parser) -> Any:
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None


def _is_tty(tty: bool | None) -> bool:
    return sys.stderr.isatty() if tty is None else tty
