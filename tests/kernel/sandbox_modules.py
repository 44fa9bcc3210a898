"""The kernel's sandbox package, imported in the test process (runtimes/python on sys.path), and kernels."""

import functools
import glob
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RUNTIME = Path(__file__).resolve().parents[2] / "runtimes" / "python"
KERNEL = RUNTIME / "kernel.py"
if str(RUNTIME) not in sys.path:
    sys.path.append(str(RUNTIME))  # appended: nothing of the project's own is shadowed


@functools.cache
def pool_python() -> str | None:
    """A CPython 3.12+ to run kernels in pool mode: this one, one on PATH, or one of pyenv's."""
    if sys.version_info >= (3, 12):
        return sys.executable
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for version in ("3.13", "3.12"):
        for binary in sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}")):
            probe = subprocess.run([binary, "-c", "import sys"], capture_output=True, timeout=10)
            if probe.returncode == 0:
                return binary
    return None


def kernel_config(mode: str, **sandbox: Any) -> str:
    settings = {
        "builtins": ["json", "math"],
        "packages": [],
        "refusedModules": ["logging.config"],
        "path": [],
    }
    config = {"mode": mode, "addressSpaceMb": 4096, "closeTimeoutS": 5, "path": []}
    return json.dumps({**config, "sandbox": {**settings, **sandbox}})


class KernelProcess:
    """A kernel driven over its protocol, one request and one answer at a time."""

    def __init__(self, python: str, mode: str) -> None:
        self.process = subprocess.Popen(
            [python, "-I", str(KERNEL), kernel_config(mode)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.ids = 0

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the kernel ended: {self.stderr()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def load(self, workspace: str, **functions: str) -> None:
        specs = [
            {"name": name, "code": code, "locals": [], "defaults": "{}", "bindable": True}
            for name, code in functions.items()
        ]
        self.send({"type": "load", "workspace": workspace, "revision": "1", "functions": specs})

    def run(self, workspace: str, fn: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        self.send(
            {
                "type": "run",
                "id": self.ids,
                "workspace": workspace,
                "revision": "1",
                "fn": fn,
                "params": params,
            }
        )
        return self.read()

    def stderr(self) -> str:
        self.process.kill()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode()

    def close(self) -> None:
        if self.process.poll() is None:
            self.send({"type": "shutdown"})
            self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
