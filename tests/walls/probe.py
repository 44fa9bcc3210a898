"""Attacks every wall from inside a host's place, and prints what happened as one JSON object.

Run by the launcher instead of a host (with the system's Python, which the unprivileged user can reach).
"""

import ctypes
import json
import os
import resource
import sys
from collections.abc import Callable
from typing import Any

PTRACE_ATTACH = 16


def attempt(action: Callable[[], Any]) -> str:
    try:
        action()
    except OSError as exc:
        return f"refused: {exc.__class__.__name__} {exc.errno}"
    except ValueError as exc:  # how setrlimit says EPERM
        return f"refused: {exc}"
    return "allowed"


def read(path: str) -> Callable[[], bytes]:
    def action() -> bytes:
        with open(path, "rb") as file:
            return file.read()

    return action


def write(path: str) -> Callable[[], None]:
    def action() -> None:
        with open(path, "w") as file:
            file.write("x")

    return action


def ptrace_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")


def start_program() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def main() -> None:
    inside, outside, parent = sys.argv[1], sys.argv[2], int(sys.argv[3])
    scratch = os.environ.get("TMPDIR", "/tmp")
    report = {
        "uid": os.getuid(),
        "read_inside": attempt(read(os.path.join(inside, "allowed.txt"))),
        "read_outside": attempt(read(outside)),
        "read_parent_environ": attempt(read(f"/proc/{parent}/environ")),
        "own_environ": read("/proc/self/environ")().decode(),
        "write_inside": attempt(write(os.path.join(inside, "new.txt"))),
        "write_tmp": attempt(write(f"/tmp/walls-probe-{os.getpid()}")),
        "scratch": scratch,
        "write_scratch": attempt(write(os.path.join(scratch, "kept.txt"))),
        "fork": attempt(start_program),
        "exec": attempt(lambda: os.execv("/bin/true", ["/bin/true"])),
        "ptrace": attempt(ptrace_parent),
        "signal_parent": attempt(lambda: os.kill(parent, 0)),
        "chmod": attempt(lambda: os.chmod(inside, 0o777)),
        "raise_limit": attempt(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 1 << 20))),
        "uid_map": read("/proc/self/uid_map")().decode().split(),
        "limits": {
            "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "file_size": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
            "core": resource.getrlimit(resource.RLIMIT_CORE)[0],
            "address_space": resource.getrlimit(resource.RLIMIT_AS)[0],
        },
        "no_new_privs": [
            line for line in read("/proc/self/status")().decode().splitlines() if "NoNewPrivs" in line
        ],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
