"""A throwaway PostgreSQL for the tests: Debian's binaries, a cluster in a temporary folder, a unix socket
in that folder (no port to race for), fsync off. It dies with the test process (PR_SET_PDEATHSIG), so a
killed pytest leaves no server behind; stop() is the orderly way."""

import ctypes
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 60.0  # initdb and the first start are slow on a loaded machine


def postgres_bin() -> Path | None:
    """The folder of initdb and postgres: PATH first, then Debian's newest /usr/lib/postgresql/<major>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return max(found, key=lambda p: int(p.parent.name), default=None) if found else None


class PostgresServer:
    """A running cluster: `url(dbname)`, `create_database()` for a fresh database, `stop()`."""

    def __init__(self, folder: Path, process: subprocess.Popen[bytes]) -> None:
        self.folder = folder
        self.process = process
        self._names = itertools.count(1)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.folder}"

    def create_database(self) -> str:
        """A new empty database's URL: each test gets its own, so none sees another's rows."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, no waiting for clients
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(bin_dir: Path) -> PostgresServer:
    """initdb and start a cluster as the current user, or as `postgres` when root (they refuse root)."""
    folder = Path(tempfile.mkdtemp(prefix="functions-pg-"))
    demote = _demotion()
    if demote is not None:
        os.chown(folder, demote[0], demote[1])
    try:
        data = folder / "data"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        subprocess.run(
            # An ICU locale that sorts "a" before "A" and ignores "-": the run ids must compare byte by byte
            # all the same (COLLATE "C"), as they would not on many a production database.
            [
                *initdb,
                "-E",
                "UTF8",
                "--locale-provider=icu",
                "--icu-locale=en-US",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            preexec_fn=_as(demote, die_with_parent=False),
            timeout=START_TIMEOUT_S,
        )
        log = (folder / "postgres.log").open("wb")
        settings = ["listen_addresses=", f"unix_socket_directories={folder}", "fsync=off"]
        settings += ["synchronous_commit=off", "full_page_writes=off", "max_connections=50"]
        process = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), *(a for s in settings for a in ("-c", s))],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_as(demote, die_with_parent=True),
        )
        log.close()
        server = PostgresServer(folder, process)
        _wait_ready(server, folder / "postgres.log")
        return server
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _demotion() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("postgres")  # Debian's package creates it
    return user.pw_uid, user.pw_gid


def _as(demote: tuple[int, int] | None, *, die_with_parent: bool) -> Callable[[], None]:
    def in_child() -> None:
        if demote is not None:
            os.setgroups([])
            os.setgid(demote[1])
            os.setuid(demote[0])
        if die_with_parent:
            # After setuid, which clears it. SIGQUIT: immediate shutdown, the postmaster takes its children.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)
            if os.getppid() == 1:
                os._exit(1)  # the parent already died

    return in_child


def _wait_ready(server: PostgresServer, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited at start:\n{log.read_text(errors='replace')}")
        try:
            with psycopg.connect(server.url(), connect_timeout=5):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.1)
