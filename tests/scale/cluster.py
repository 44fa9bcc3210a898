"""Service instances sharing one storage folder, behind a real nginx running the shipped config."""

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.serving import free_port
from tests.faults.service import Service

NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "functions.conf"
INSTANCES = re.compile(r"# BEGIN instances\n(.*?)\n[ \t]*# END instances", re.S)
SERVER_LINE = re.compile(r"^([ \t]*server )\S+( [^;\n]*;)$", re.M)
LISTEN = "listen 80;"
NGINX_LOGS = "/var/log/nginx/"
PR_SET_PDEATHSIG = 1
# NGINX's access log, in the shipped `functions` format: which instance answered which workspace.
ACCESS_LINE = re.compile(
    r'"(?P<request>[^"]*)" (?P<status>\d+) .* workspace=(?P<ws>\S+) upstream=(?P<up>.*?) '
)


def render(ports: Sequence[int], listen_port: int, logs: Path) -> str:
    """The shipped functions.conf with these instances, listening on loopback, logging under `logs`."""
    text = NGINX_CONF.read_text()
    block = INSTANCES.search(text)
    assert block is not None, "functions.conf lost its '# BEGIN instances' ... '# END instances' block"
    line = SERVER_LINE.search(block.group(1))
    assert line is not None, "no `server` line between the instance markers"
    servers = "\n".join(f"{line.group(1)}127.0.0.1:{port}{line.group(2)}" for port in ports)
    text = text[: block.start(1)] + servers + text[block.end(1) :]
    assert text.count(LISTEN) == 1 and NGINX_LOGS in text
    text = text.replace(LISTEN, f"listen 127.0.0.1:{listen_port};")
    return text.replace(NGINX_LOGS, f"{logs}/")


def main_conf(folder: Path, include: Path) -> str:
    """nginx.conf around the include, as /etc/nginx/nginx.conf is, but every path in `folder`."""
    temp = "\n".join(
        f"    {kind}_temp_path {folder}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers write the temp files made as root
    return (
        f"{user}pid {folder}/nginx.pid;\nerror_log {folder}/error.log notice;\nworker_processes 1;\n"
        f"events {{ worker_connections 512; }}\nhttp {{\n{temp}\n    include {include};\n}}\n"
    )


class Nginx:
    """`nginx -g 'daemon off;'` as a child process: it dies with the test process too."""

    def __init__(self, folder: Path, ports: Sequence[int]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (folder / "functions.conf").write_text(render(ports, self.port, folder))
        (folder / "nginx.conf").write_text(main_conf(folder, folder / "functions.conf"))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        args = [binary, "-c", str(folder / "nginx.conf"), "-p", str(folder), "-e", str(folder / "error.log")]
        with (folder / "stderr.log").open("ab") as err:
            self.process = subprocess.Popen(
                [*args, "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.folder / 'stderr.log').read_text()}")
            try:
                httpx.get(f"{self.url}/sys/healthcheck", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.02)
        raise TimeoutError("nginx did not answer")

    def access(self) -> list[tuple[str, int, str, str]]:
        """(request line, status, workspace, upstream addresses) of every request nginx passed on."""
        text = (self.folder / "functions.access.log").read_text()
        return [
            (m["request"], int(m["status"]), m["ws"], m["up"])
            for m in map(ACCESS_LINE.search, text.splitlines())
            if m
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def instances(storage: Path, count: int = 3, **environ: str) -> Iterator[list[Service]]:
    """`count` services on one storage folder, started together; stopped (SIGTERM) after."""
    storage.mkdir(parents=True, exist_ok=True)
    started = [
        Service(storage, log=storage.parent / f"instance-{i}-{free_port()}.log", **environ)
        for i in range(count)
    ]
    try:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda service: service.wait_ready(60.0), started))
        yield started
    finally:
        for service in started:
            service.stop()


def workers(service: Service, language: str = "nodejs") -> int:
    health = httpx.get(f"{service.url}/sys/healthcheck", timeout=10).json()
    count: int = health["runtimes"][language]["workers"]
    return count


def metric(service: Service, name: str, labels: str) -> float:
    """One sample of the instance's /metrics (0 when it has none yet)."""
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0
