"""A Python kernel: NDJSON on stdin/stdout, one interpreter per resident workspace, one thread per run.

Started by the service as `python kernel.py '<json config>'`. In `pool` mode each workspace gets a
subinterpreter (PEP 734: `concurrent.interpreters`, or `backports.interpreters` before 3.14); in
`main` mode the kernel holds a single workspace in its own main interpreter (for packages such as
numpy that cannot load in a subinterpreter). Imports only the standard library (and the backport).
Runs of one workspace take turns (an interpreter runs one call at a time); runs of different
workspaces go on in parallel threads. The kernel never stops a run: the service replaces the whole
process when a run overstays its timeout, since a subinterpreter cannot be interrupted.
"""

import collections
import faulthandler
import functools
import importlib.machinery
import importlib.util
import json
import os
import queue
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

interpreters: Any = None  # concurrent.interpreters or its backport, imported by main()
SANDBOX = (Path(__file__).resolve().parent / "sandbox.py").read_text()
PROTOCOL = 1
_write_lock = threading.Lock()
_out = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)  # a stray write to fd 1 (C code, a careless print) must not corrupt the protocol


def send(message: dict[str, Any] | str) -> None:
    line = (message if isinstance(message, str) else json.dumps(message)).encode() + b"\n"
    with _write_lock:
        _out.write(line)


def _enter(op: str, text: str) -> str:  # runs inside a subinterpreter, where ENTRY is the sandbox's
    return ENTRY[op](text)  # type: ignore[name-defined,no-any-return]  # noqa: F821


class SubInterpreter:
    """A subinterpreter holding the sandbox; `call` enters it on the calling thread."""

    def __init__(self, config: str) -> None:
        self.interp = new_subinterpreter()
        self.interp.exec(SANDBOX)
        self.call("configure", config)

    def call(self, op: str, text: str) -> str:
        return once_alone(lambda: self.interp.call(_enter, op, text))  # type: ignore[no-any-return]

    def close(self) -> None:
        try:
            self.call("release", "")
            once_alone(self.interp.close)
        except Exception as exc:
            # Kept, not left to the garbage collector: destroying it later, with a thread still in it,
            # would abort the whole kernel.
            _kept.append(self.interp)
            why = f"{type(exc).__name__}: {exc}"
            print(
                f"an interpreter could not be closed ({why}): its memory stays with this kernel",
                file=sys.stderr,
            )


def once_alone(action: Callable[[], Any]) -> Any:
    """Do `action` on an interpreter, waiting out a 3.11 GIL nudger that is still leaving.

    The nudger signals its end a moment before its thread state is unlinked; until then the
    interpreter refuses calls and closing ("more than one thread").
    """
    for attempt in range(400):  # 40 ms of short waits, then up to 2 s more on a loaded machine
        try:
            return action()
        except Exception as exc:  # the backport wraps the RuntimeError in InterpreterNotFoundError
            if not another_thread_inside(exc):
                raise
            time.sleep(0.0002 if attempt < 200 else 0.01)
    return action()


def another_thread_inside(exc: BaseException | None) -> bool:
    """Whether an interpreter refused for having a second thread (the backport may wrap that error)."""
    while exc is not None:
        if isinstance(exc, RuntimeError) and "more than one thread" in str(exc):
            return True
        exc = exc.__cause__
    return False


def new_subinterpreter() -> Any:
    if sys.version_info >= (3, 12):
        return interpreters.create()
    # 3.11 refuses threads in an isolated subinterpreter, and the sandbox needs one to share the GIL
    # fairly (see GilNudger in sandbox.py). A "legacy" interpreter allows them; fork and exec stay
    # out of reach: user code cannot import os or subprocess unless an operator allows it.
    legacy = interpreters._interpreters.create("legacy", reqrefs=True)
    return interpreters.Interpreter(legacy, _ownsref=True)


class MainInterpreter:
    """The kernel's own interpreter, for a dedicated kernel: the sandbox as a module of its own."""

    def __init__(self, config: str) -> None:
        self.namespace: dict[str, Any] = {"__name__": "sandbox"}
        exec(compile(SANDBOX, "sandbox.py", "exec"), self.namespace)
        self.call("configure", config)

    def call(self, op: str, text: str) -> str:
        return self.namespace["ENTRY"][op](text)  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


class Slot:
    """A resident workspace: its load request and, once booted, its interpreter."""

    def __init__(self, workspace: str, revision: str, load: str) -> None:
        self.workspace, self.revision, self.load = workspace, revision, load
        self.interpreter: SubInterpreter | MainInterpreter | None = None
        self.lock = threading.Lock()  # an interpreter runs one call at a time
        # Runs wait here, not in threads of their own: under load, a thread per waiting run would
        # spend the kernel's address-space limit on stacks. One thread drains the queue at a time.
        self.pending: collections.deque[tuple[dict[str, Any], float]] = collections.deque()
        self.draining = False
        self.queue_lock = threading.Lock()
        self.retired = False
        self.ran_out_of_memory = False

    def boot(self, kernel: "Kernel") -> None:
        interpreter = kernel.new_interpreter()
        interpreter.call("load", self.load)
        self.interpreter = interpreter

    def retire(self) -> None:
        self.retired = True
        _retired.put(self)

    def close(self, deadline_s: float) -> None:
        with self.lock:  # after the run in progress, if any (a run is timed by the service)
            if self.interpreter is None:
                return
            if self.ran_out_of_memory:
                # 3.11 sometimes aborts the whole kernel ("Py_EndInterpreter: thread still has a frame")
                # when it closes an interpreter that hit MemoryError: keep it (its user memory is freed).
                _kept.append(self.interpreter)
            else:
                # Closing runs what user code left behind (a generator's `finally` kept in `cache`), which
                # no run timeout covers. Past the deadline the kernel exits (a C-level timer: a 3.11 loop
                # there can starve Python threads) and the service replaces it, as after a run's timeout.
                faulthandler.dump_traceback_later(deadline_s, exit=True)
                try:
                    self.interpreter.close()
                finally:
                    faulthandler.cancel_dump_traceback_later()
            self.interpreter = None


# Retired interpreters close one at a time on one thread: a burst of saves must not start a thread
# (and a stack, against the address-space limit) per interpreter.
_retired: "queue.SimpleQueue[Slot]" = queue.SimpleQueue()
_kept: list[Any] = []


def close_retired_forever(deadline_s: float) -> None:
    while True:
        _retired.get().close(deadline_s)


class Kernel:
    """The resident workspaces of this process, and one booted spare interpreter."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.mode = config["mode"]
        shared_gil = self.mode == "pool" and sys.version_info < (3, 12)
        self.sandbox_config = json.dumps({**config["sandbox"], "nudgeGil": shared_gil})
        self.slots: dict[str, Slot] = {}
        self.spare: SubInterpreter | None = None
        self.spare_lock = threading.Lock()
        self.create_lock = threading.Lock()
        self.refilling = False
        self.checker: dict[str, Any] = {"__name__": "checker"}
        exec(compile(SANDBOX, "sandbox.py", "exec"), self.checker)  # compile checks, no configure
        if self.mode == "pool":
            self.refill()

    def new_interpreter(self) -> SubInterpreter | MainInterpreter:
        if self.mode == "main":
            return MainInterpreter(self.sandbox_config)
        with self.spare_lock:
            spare, self.spare = self.spare, None
        self.refill()
        return spare or self.create()

    def create(self) -> SubInterpreter:
        # One at a time: under a burst of cold starts, dozens of half-built interpreters at once
        # would spend the kernel's memory limit; creating one mostly holds the GIL anyway.
        with self.create_lock:
            return SubInterpreter(self.sandbox_config)

    def refill(self) -> None:
        """Boot a spare in the background, unless one is there or on its way."""
        with self.spare_lock:
            if self.spare is not None or self.refilling:
                return
            self.refilling = True

        def boot() -> None:
            try:
                interpreter = self.create()
            finally:
                with self.spare_lock:
                    self.refilling = False
            with self.spare_lock:
                if self.spare is None:
                    self.spare = interpreter
                    return
            interpreter.close()

        try:
            threading.Thread(target=boot, daemon=True).start()
        except RuntimeError:  # no thread to be had now (memory): the next cold start boots its own
            with self.spare_lock:
                self.refilling = False

    # -- messages ---------------------------------------------------------------------------------

    def on_load(self, message: dict[str, Any]) -> None:
        old = self.slots.get(message["workspace"])
        if old is not None:
            old.retire()
        self.slots[message["workspace"]] = Slot(
            message["workspace"], message["revision"], json.dumps(message)
        )

    def on_run(self, message: dict[str, Any]) -> None:
        received = time.monotonic() * 1000
        slot = self.slots.get(message["workspace"])
        if slot is None or slot.revision != message["revision"]:
            send({"type": "result", "id": message["id"], "status": "not_loaded"})
            return
        with slot.queue_lock:
            slot.pending.append((message, received))
            if slot.draining:
                return
            slot.draining = True
        try:
            threading.Thread(target=self.drain, args=(slot,), daemon=True).start()
        except RuntimeError:  # no thread to be had (memory): those runs fail, the kernel goes on
            with slot.queue_lock:
                waiting, slot.draining = list(slot.pending), False
                slot.pending.clear()
            for waiting_message, _ in waiting:
                error = {"name": "MemoryError", "message": "the kernel could not start a thread for the run"}
                send(
                    {
                        "type": "result",
                        "id": waiting_message["id"],
                        "status": "resource_limit",
                        "error": error,
                    }
                )

    def drain(self, slot: Slot) -> None:
        while True:
            with slot.queue_lock:
                if not slot.pending:
                    slot.draining = False
                    return
                message, received = slot.pending.popleft()
            self.run(slot, message, received)

    def run(self, slot: Slot, message: dict[str, Any], received: float) -> None:
        if slot.retired:  # a newer version was loaded, or the workspace evicted, while this run waited
            send({"type": "result", "id": message["id"], "status": "not_loaded"})
            return
        with slot.lock:
            cold = slot.interpreter is None
            try:
                if slot.interpreter is None:
                    slot.boot(self)
                started = time.monotonic() * 1000
                assert slot.interpreter is not None
                text = slot.interpreter.call(
                    "run", json.dumps({"fn": message["fn"], "params": message["params"]})
                )
            except MemoryError:
                text, started = json.dumps({"status": "resource_limit", "error": memory_error()}), received
            except Exception as exc:  # the interpreter could not start or load: a failed run
                text, started = json.dumps({"status": "failed", "error": kernel_error(exc)}), received
            if '"MemoryError"' in text[:300]:
                slot.ran_out_of_memory = True
        host = {"receivedAt": received, "cold": cold, "coldMs": started - received if cold else 0.0}
        send(
            f'{{"type":"result","id":{message["id"]},"startedAt":{started},"host":{json.dumps(host)},{text[1:]}'
        )

    def on_evict(self, message: dict[str, Any]) -> None:
        slot = self.slots.pop(message["workspace"], None)
        if slot is not None:
            slot.retire()

    def on_compile(self, message: dict[str, Any]) -> None:
        send({"type": "compiled", "id": message["id"], **self.checker["check"](message)})

    def on_inspect(self, message: dict[str, Any]) -> None:
        compiled: dict[str, str | None] = {}
        for module in message["modules"]:
            try:
                compiled[module] = compiled_code(module)
            except Exception:  # metadata it cannot read: a kernel of its own is the safe answer
                compiled[module] = module
        send({"type": "inspected", "id": message["id"], "compiled": compiled})

    def on_shutdown(self, message: dict[str, Any]) -> None:
        os._exit(0)  # threads stuck in user code would keep an orderly exit waiting


def memory_error() -> dict[str, str]:
    return {"name": "MemoryError", "message": "the run went over the kernel's memory limit"}


def kernel_error(exc: BaseException) -> dict[str, str]:
    return {
        "name": type(exc).__name__,
        "message": str(exc).strip().splitlines()[-1] if str(exc).strip() else "",
    }


EXTENSION_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd")
REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def compiled_code(module: str) -> str | None:
    """The installed distribution that ships compiled extension modules among those `module` needs: its
    own distribution and, through their Requires-Dist, every one they require (python-docx: lxml), or
    None. Compiled extensions may not load in a subinterpreter, or only in one per process."""
    if module in sys.stdlib_module_names:
        return None
    todo = list(distributions_of(module))
    if not todo:  # no metadata (a folder put on the path by hand): look at its files
        return module if native_folder(module) else None
    seen: set[str] = set()
    while todo:
        facts = distribution_facts(todo.pop(0))
        if facts is None or facts.name in seen:
            continue
        seen.add(facts.name)
        if facts.compiled:
            return facts.name
        todo.extend(facts.requires)
    return None


@functools.cache
def distributions_of(module: str) -> tuple[str, ...]:
    return tuple(packages_distributions().get(module, ()))


@functools.cache
def packages_distributions() -> Mapping[str, list[str]]:
    import importlib.metadata  # on demand: only a kernel asked about packages pays for it

    return importlib.metadata.packages_distributions()


class Facts(NamedTuple):
    name: str
    compiled: bool
    requires: tuple[str, ...]


@functools.cache
def distribution_facts(name: str) -> Facts | None:
    """Whether an installed distribution ships compiled extensions, and what it requires (cached)."""
    import importlib.metadata

    try:
        distribution = importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None  # an optional dependency that is not installed
    files = distribution.files
    if files is None:  # no RECORD (some system packages): its top-level folders
        tops = (distribution.read_text("top_level.txt") or "").split()
        compiled = any(native_folder(top) for top in tops)
    else:
        compiled = any(str(path).endswith(EXTENSION_SUFFIXES) for path in files)
    requires = []
    for requirement in distribution.requires or ():
        spec, _, marker = requirement.partition(";")
        found = REQUIREMENT_NAME.match(spec)
        if found and "extra" not in marker:  # extras are asked for by name, never implied
            requires.append(found.group(1))
    canonical = re.sub(r"[-_.]+", "-", distribution.metadata["Name"] or name).lower()
    return Facts(canonical, compiled, tuple(requires))


def native_folder(module: str) -> bool:
    """Whether an importable module's files include compiled extensions."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or module in sys.stdlib_module_names:
        return False
    origins = [spec.origin or ""]
    for folder in spec.submodule_search_locations or ():
        for _root, _dirs, files in os.walk(folder):
            origins.extend(files)
    return any(name.endswith(EXTENSION_SUFFIXES) for name in origins)


def limit_resources(address_space_mb: int) -> None:
    size = address_space_mb * 1024 * 1024
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        resource.setrlimit(limit, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def main() -> None:
    global interpreters
    config = json.loads(sys.argv[1])
    for folder in reversed(config.get("path", [])):
        sys.path.insert(0, folder)
    if config["mode"] == "pool":
        name = "concurrent.interpreters" if sys.version_info >= (3, 14) else "backports.interpreters"
        interpreters = importlib.import_module(name)
    threading.stack_size(2 * 1024 * 1024)  # address space counts against RLIMIT_AS: not 8 MiB a thread
    limit_resources(config["addressSpaceMb"])
    kernel = Kernel(config)
    threading.Thread(target=close_retired_forever, args=(config["closeTimeoutS"],), daemon=True).start()
    handlers = {
        "load": kernel.on_load,
        "run": kernel.on_run,
        "evict": kernel.on_evict,
        "compile": kernel.on_compile,
        "inspect": kernel.on_inspect,
        "shutdown": kernel.on_shutdown,
    }
    send({"type": "ready", "protocol": PROTOCOL, "python": sys.version.split()[0], "pid": os.getpid()})
    for line in sys.stdin.buffer:
        try:
            message = json.loads(line)
            handler = handlers[message["type"]]
        except (ValueError, KeyError, TypeError) as exc:
            send({"type": "protocol_error", "detail": f"{type(exc).__name__}: {exc}"})
            os._exit(2)
        try:
            handler(message)
        except Exception as exc:  # e.g. out of memory: that request fails, the kernel goes on
            if "id" in message:
                why = f"the python kernel could not {message['type']}: {type(exc).__name__}: {exc}"
                send({"type": "unavailable", "id": message["id"], "message": why})
    os._exit(0)


if __name__ == "__main__":
    main()
