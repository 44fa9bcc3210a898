"""Python kernel figures over its own protocol (no service): cold start, warm runs, memory per workspace.

.venv/bin/python bench/kernel_cold.py [--python BINARY] [--mode pool|main] [--kernel PATH]

Cold start is a `load` of a new workspace plus its first `run`, answered (the kernel boots a spare
interpreter in the background: the bench leaves it a moment between cold starts, as between saves).
Memory is the kernel's RSS after N more workspaces are resident, per workspace. In `main` mode a kernel
holds one workspace, so only one cold start per kernel process is measured (process start excluded).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from entrypoints.settings import PYTHON_BUILTINS, PYTHON_PACKAGES  # noqa: E402

HELLO = {
    "name": "hello",
    "code": "return 'Hello ' + name",
    "locals": ["name"],
    "defaults": "{}",
    "bindable": True,
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def backport_folder() -> list[str]:
    spec = find_spec("backports.interpreters")
    return [str(Path(spec.origin).parent.parent.parent)] if spec and spec.origin else []


class KernelProcess:
    def __init__(self, python: str, mode: str, kernel: Path) -> None:
        path = backport_folder()
        sandbox = {
            "builtins": list(PYTHON_BUILTINS),
            "packages": list(PYTHON_PACKAGES),
            "refusedModules": ["logging.config"],
            "path": path,
            "maxEntries": 1000,
            "maxBytes": 1 << 20,
            "maxResultBytes": 10 << 20,
            "egress": None,
        }
        config = {"mode": mode, "addressSpaceMb": 4096, "closeTimeoutS": 5, "path": path, "sandbox": sandbox}
        self.process = subprocess.Popen(
            [python, "-I", str(kernel), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={"MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"},
        )
        self.ready = self.read()
        self.ids = 0

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the kernel ended (exit {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def load(self, workspace: str) -> None:
        self.send({"type": "load", "workspace": workspace, "revision": "1", "functions": [HELLO]})

    def run(self, workspace: str) -> dict[str, Any]:
        self.ids += 1
        self.send(
            {
                "type": "run",
                "id": self.ids,
                "workspace": workspace,
                "revision": "1",
                "fn": "hello",
                "params": {"name": "x"},
            }
        )
        answer = self.read()
        assert answer.get("status") == "succeeded", answer
        return answer

    def rss_mb(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/status").read_text().split("\n")
        kb = next(int(line.split()[1]) for line in fields if line.startswith("VmRSS:"))
        return kb / 1024

    def close(self) -> None:
        self.send({"type": "shutdown"})
        self.process.wait(timeout=10)


def cold_ms(kernel: KernelProcess, workspace: str) -> float:
    started = time.perf_counter()
    kernel.load(workspace)
    kernel.run(workspace)
    return (time.perf_counter() - started) * 1000


def bench_pool(python: str, kernel_script: Path, colds: int, residents: int) -> None:
    kernel = KernelProcess(python, "pool", kernel_script)
    print(f"python {kernel.ready['python']} pool mode")
    time.sleep(0.5)  # the first spare
    cold = []
    for i in range(colds):
        cold.append(cold_ms(kernel, f"cold{i}"))
        time.sleep(0.1)  # the next spare boots
    warm = []
    for _ in range(2000):
        started = time.perf_counter()
        kernel.run("cold0")
        warm.append((time.perf_counter() - started) * 1000)
    before = kernel.rss_mb()
    for i in range(residents):
        kernel.load(f"resident{i}")
        kernel.run(f"resident{i}")
    after = kernel.rss_mb()
    kernel.close()
    report(cold, warm)
    print(
        f"memory: {before:.1f} -> {after:.1f} MiB RSS for {residents} more workspaces: "
        f"{(after - before) / residents:.2f} MiB a workspace"
    )


def bench_main(python: str, kernel_script: Path, colds: int) -> None:
    cold, warm, rss = [], [], []
    for i in range(colds):
        kernel = KernelProcess(python, "main", kernel_script)
        cold.append(cold_ms(kernel, f"cold{i}"))
        if i == 0:
            print(f"python {kernel.ready['python']} main mode (a kernel per workspace)")
            for _ in range(2000):
                started = time.perf_counter()
                kernel.run("cold0")
                warm.append((time.perf_counter() - started) * 1000)
        rss.append(kernel.rss_mb())
        kernel.close()
    report(cold, warm)
    print(f"memory: {statistics.median(rss):.1f} MiB RSS a kernel (one workspace)")


def report(cold: list[float], warm: list[float]) -> None:
    p50, p95 = statistics.median(cold), percentile(cold, 0.95)
    print(f"cold start (load + first run): p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    print(f"warm run: p50 {statistics.median(warm):.3f} ms, p99 {percentile(warm, 0.99):.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--mode", choices=("pool", "main"), default="pool")
    parser.add_argument("--kernel", type=Path, default=ROOT / "runtimes" / "python" / "kernel.py")
    parser.add_argument("--colds", type=int, default=40)
    parser.add_argument("--residents", type=int, default=40)
    args = parser.parse_args()
    if args.mode == "pool":
        bench_pool(args.python, args.kernel, args.colds, args.residents)
    else:
        bench_main(args.python, args.kernel, min(args.colds, 15))


if __name__ == "__main__":
    main()
