"""A Python kernel: NDJSON on stdin/stdout, one interpreter per resident workspace, one thread per busy one.

Started by the service as `python -I kernel.py '<json config>'`. In `pool` mode each workspace gets a
subinterpreter with a GIL of its own (PEP 684: CPython 3.12+; on an older Python the kernel refuses to
start); in `main` mode the kernel holds a single workspace in its own main interpreter (for packages such
as numpy that cannot load in a subinterpreter). Imports only the standard library. Runs of one workspace
take turns (an interpreter runs one call at a time); runs of different workspaces go on in parallel
threads. The kernel never stops a run: the service replaces the whole process when a run overstays its
timeout, since a subinterpreter cannot be interrupted.
"""

import json
import os
import queue
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

# The kernel's own modules (hosting/) and the sandbox (sandbox/) sit next to this file; `-I` leaves this
# folder off sys.path. They leave sys.path and sys.modules again before any user code runs (`forget_own`).
FOLDER = str(Path(__file__).resolve().parent)
sys.path.insert(0, FOLDER)
from hosting.interpreters import (  # noqa: E402
    InterpreterFailed,
    MainInterpreter,
    SubInterpreter,
    pool_refusal,
    sandbox_code,
    subinterpreter_class,
)
from hosting.packages import compiled_code  # noqa: E402
from hosting.slots import (  # noqa: E402
    INTERPRETER_ROOM_MB,
    PARK_S,
    Slot,
    address_space_mb,
    chores,
    close_interpreter,
)
from hosting.workers import Workers  # noqa: E402
from sandbox.checks import check  # noqa: E402

PROTOCOL = 1
_write_lock = threading.Lock()
_out = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)  # a stray write to fd 1 (C code, a careless print) must not corrupt the protocol


def send(message: dict[str, Any] | str) -> None:
    line = (message if isinstance(message, str) else json.dumps(message)).encode() + b"\n"
    with _write_lock:
        _out.write(line)


def forget_own() -> None:
    """Take the kernel's and the sandbox's modules out of reach of imports by name (they stay loaded)."""
    while FOLDER in sys.path:
        sys.path.remove(FOLDER)
    for name in list(sys.modules):
        if name.partition(".")[0] in ("hosting", "sandbox"):
            del sys.modules[name]


def do_chores_forever(kernel: "Kernel", deadline_s: float) -> None:
    while True:
        try:
            chore, slot = chores.get(timeout=1.0)
        except queue.Empty:
            chore = ""
        if chore == "drop":
            slot.drop_workspace(deadline_s)
        elif chore == "close":
            slot.close(deadline_s)
        kernel.close_parked()


class Kernel:
    """The resident workspaces of this process, and one booted spare interpreter."""

    def __init__(self, config: dict[str, Any], entry: dict[str, Any] | None) -> None:
        self.mode = config["mode"]
        sandbox = {**config["sandbox"], "subinterpreter": self.mode == "pool"}
        self.sandbox_config = json.dumps(sandbox)
        self.entry = entry  # main mode: the sandbox in this interpreter
        self.close_deadline_s = float(config["closeTimeoutS"])
        self.address_limit_mb = float(config["addressSpaceMb"])
        self.slots: dict[str, Slot] = {}
        # Evicted workspaces' slots, kept PARK_S for a save's next version to take over (the service
        # evicts at every save); then closed.
        self.parked: dict[str, tuple[Slot, float]] = {}
        self.parked_lock = threading.Lock()
        self.workers = Workers()
        self.spare: SubInterpreter | None = None
        self.spare_lock = threading.Lock()
        self.create_lock = threading.Lock()
        self.refilling = False
        if self.mode == "pool":
            self.subinterpreter = subinterpreter_class()
            self.sandbox = sandbox_code()
            self.spare = self.create()  # at start: a kernel that cannot boot one fails before `ready`

    def new_interpreter(self) -> SubInterpreter | MainInterpreter:
        if self.entry is not None:
            return MainInterpreter(self.entry, self.sandbox_config)
        with self.spare_lock:
            spare, self.spare = self.spare, None
        self.refill()
        return spare or self.create()

    def create(self) -> SubInterpreter:
        # One at a time: under a burst of cold starts, dozens of half-built interpreters at once
        # would spend the kernel's memory limit.
        with self.create_lock:
            # CPython aborts the whole process when an interpreter cannot be allocated: refuse first.
            if address_space_mb() + INTERPRETER_ROOM_MB > self.address_limit_mb:
                raise MemoryError("the kernel is at its memory limit: no room for another interpreter")
            return self.subinterpreter(self.sandbox, self.sandbox_config)

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
            close_interpreter(interpreter, self.close_deadline_s)

        try:
            threading.Thread(target=boot, daemon=True).start()
        except RuntimeError:  # no thread to be had now (memory): the next cold start boots its own
            with self.spare_lock:
                self.refilling = False

    # -- messages: each handler gets the message and its line as it came ---------------------------------

    def on_load(self, message: dict[str, Any], line: bytes) -> None:
        workspace = message["workspace"]
        with self.parked_lock:
            old = self.slots.get(workspace) or self.parked.pop(workspace, (None, 0.0))[0]
        if old is not None:
            old.retire()
        previous = old.inheritable() if old is not None else None
        self.slots[workspace] = Slot(workspace, message["revision"], line.decode(), previous)

    def on_run(self, message: dict[str, Any], line: bytes) -> None:
        received = time.monotonic() * 1000
        slot = self.slots.get(message["workspace"])
        if slot is None or slot.revision != message["revision"]:
            send({"type": "result", "id": message["id"], "status": "not_loaded"})
            return
        with slot.queue_lock:
            slot.pending.append((message, line.decode(), received))
            if slot.draining:
                return
            slot.draining = True
        try:
            self.workers.submit(self.drain, slot)
        except RuntimeError:  # no thread to be had (memory): those runs fail, the kernel goes on
            with slot.queue_lock:
                waiting, slot.draining = list(slot.pending), False
                slot.pending.clear()
            error = {"name": "MemoryError", "message": "the kernel could not start a thread for the run"}
            for waiting_message, _, _ in waiting:
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
                message, text, received = slot.pending.popleft()
            self.run(slot, message, text, received)

    def run(self, slot: Slot, message: dict[str, Any], text: str, received: float) -> None:
        with slot.lock:
            if slot.retired and slot.interpreter is None:  # replaced before it ever ran: no cold start
                send({"type": "result", "id": message["id"], "status": "not_loaded"})
                return
            cold = slot.interpreter is None
            try:
                if slot.interpreter is None:
                    slot.boot(self)
                started = time.monotonic() * 1000
                assert slot.interpreter is not None
                reply = slot.interpreter.call("run", text)
            except Exception as exc:  # the interpreter could not start or load: a failed run
                reply, started = json.dumps(failure(exc)), received
        host = {"receivedAt": received, "cold": cold, "coldMs": started - received if cold else 0.0}
        send(
            f'{{"type":"result","id":{message["id"]},"startedAt":{started},"host":{json.dumps(host)},{reply[1:]}'
        )

    def on_evict(self, message: dict[str, Any], line: bytes) -> None:
        slot = self.slots.pop(message["workspace"], None)
        if slot is not None:
            slot.retire()
            with self.parked_lock:  # its next version, if one comes soon, takes over its interpreter
                self.parked[message["workspace"]] = (slot, time.monotonic())
            chores.put(("drop", slot))  # its state goes now, as with a close (and under its deadline)

    def close_parked(self) -> None:
        """Close the interpreters of evicted workspaces that no new version took over within PARK_S."""
        deadline = time.monotonic() - PARK_S
        with self.parked_lock:
            expired = [w for w, (_, at) in self.parked.items() if at < deadline]
            slots = [self.parked.pop(w)[0] for w in expired]
        for slot in slots:
            chores.put(("close", slot))

    def on_compile(self, message: dict[str, Any], line: bytes) -> None:
        send({"type": "compiled", "id": message["id"], **check(message)})

    def on_inspect(self, message: dict[str, Any], line: bytes) -> None:
        compiled: dict[str, str | None] = {}
        for module in message["modules"]:
            try:
                compiled[module] = compiled_code(module)
            except Exception:  # metadata it cannot read: a kernel of its own is the safe answer
                compiled[module] = module
        send({"type": "inspected", "id": message["id"], "compiled": compiled})

    def on_shutdown(self, message: dict[str, Any], line: bytes) -> None:
        os._exit(0)  # threads stuck in user code would keep an orderly exit waiting


def failure(exc: BaseException) -> dict[str, Any]:
    """A run that failed before user code could answer: out of memory, or an interpreter that would not
    start or load (by the name of the error raised in it)."""
    name = exc.name if isinstance(exc, InterpreterFailed) else type(exc).__name__
    if name == "MemoryError":
        return {"status": "resource_limit", "error": memory_error()}
    message = str(exc).strip()
    return {
        "status": "failed",
        "error": {"name": name, "message": message.splitlines()[-1] if message else ""},
    }


def memory_error() -> dict[str, str]:
    return {"name": "MemoryError", "message": "the run went over the kernel's memory limit"}


def limit_resources(address_space_mb: int) -> None:
    size = address_space_mb * 1024 * 1024
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        resource.setrlimit(limit, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def main() -> None:
    config = json.loads(sys.argv[1])
    if config["mode"] == "pool" and (refusal := pool_refusal()) is not None:
        print(f"python kernel: {refusal}", file=sys.stderr)
        os._exit(2)
    for folder in reversed(config.get("path", [])):
        sys.path.insert(0, folder)
    # The sandbox in this interpreter too, before any user code: a dedicated kernel runs it here. In pool
    # mode, the extension modules it imports load here first: on 3.12 a subinterpreter that is the first
    # to import `_datetime` (single-phase init) crashes the process.
    from sandbox.entry import ENTRY

    entry = ENTRY if config["mode"] == "main" else None
    forget_own()
    threading.stack_size(2 * 1024 * 1024)  # address space counts against RLIMIT_AS: not 8 MiB a thread
    limit_resources(config["addressSpaceMb"])
    kernel = Kernel(config, entry)
    closer = threading.Thread(target=do_chores_forever, args=(kernel, kernel.close_deadline_s), daemon=True)
    closer.start()
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
            handler(message, line)
        except Exception as exc:  # e.g. out of memory: that request fails, the kernel goes on
            if "id" in message:
                why = f"the python kernel could not {message['type']}: {type(exc).__name__}: {exc}"
                send({"type": "unavailable", "id": message["id"], "message": why})
    os._exit(0)


if __name__ == "__main__":
    main()
