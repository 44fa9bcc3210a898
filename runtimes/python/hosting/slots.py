"""A resident workspace's slot in the kernel (its load request, its interpreter, its queue of runs) and the
chores of retired ones (dropping their state, closing their interpreters), done on one thread."""

import collections
import faulthandler
import os
import queue
import sys
import threading
import time
from typing import Any, Protocol

from hosting.interpreters import MainInterpreter, SubInterpreter

Interpreter = SubInterpreter | MainInterpreter


class Interpreters(Protocol):
    def new_interpreter(self) -> Interpreter: ...


class Slot:
    """A resident workspace: its load request and, once booted, its interpreter.

    A new version of a workspace takes over the interpreter of the one it replaces (`previous`) rather
    than building another: CPython 3.12 and 3.13 keep ~4.5 MiB of every subinterpreter they close, so an
    interpreter per save would fill the kernel. Only versions of one workspace share an interpreter.
    """

    def __init__(self, workspace: str, revision: str, load: str, previous: "Slot | None" = None) -> None:
        self.workspace, self.revision, self.load = workspace, revision, load
        self.interpreter: SubInterpreter | MainInterpreter | None = None
        self.previous = previous  # whose interpreter this one takes over at its first run
        self.lock = threading.Lock()  # an interpreter runs one call at a time
        # Runs wait here, not in threads of their own: under load, a thread per waiting run would
        # spend the kernel's address-space limit on stacks. One thread drains the queue at a time.
        self.pending: collections.deque[tuple[dict[str, Any], str, float]] = collections.deque()
        self.draining = False
        self.queue_lock = threading.Lock()
        self.retired = False

    def boot(self, kernel: Interpreters) -> None:
        interpreter = self.take_previous() or kernel.new_interpreter()
        interpreter.call("load", self.load)  # the previous version's state is dropped first
        self.interpreter = interpreter

    def take_previous(self) -> "SubInterpreter | MainInterpreter | None":
        previous, self.previous = self.previous, None
        if previous is None:
            return None
        with previous.lock:  # after the run in progress on it
            interpreter, previous.interpreter = previous.interpreter, None
        return interpreter

    def retire(self) -> None:
        """No new run reaches this slot (the kernel's table no longer names it); the runs already queued
        here finish on its interpreter, as the Node host's do. Without this, runs queued behind a save
        would answer not_loaded and come back with the old code, replacing the new. Whoever retires it
        closes it, or hands it to a successor (`previous`)."""
        with self.queue_lock:
            self.retired = True

    def inheritable(self) -> "Slot | None":
        """What a successor takes over: this slot if it has an interpreter, else what it would have."""
        return self if self.interpreter is not None else self.previous

    def drop_workspace(self, deadline_s: float) -> None:
        """Let go of the workspace's state (its `cache`, its globals) but keep the interpreter for the next
        version. Dropping runs user code (a generator's `finally` kept in `cache`): under the deadline."""
        with self.queue_lock:
            busy = self.draining  # runs queued before the eviction finish first
        if busy:
            time.sleep(0.01)
            chores.put(("drop", self))
            return
        with self.lock:
            if self.interpreter is None:
                return
            faulthandler.dump_traceback_later(deadline_s, exit=True)
            try:
                self.interpreter.call("drop", "")
            finally:
                faulthandler.cancel_dump_traceback_later()

    def close(self, deadline_s: float) -> None:
        with self.lock:  # after the run in progress, if any (a run is timed by the service)
            interpreter, self.interpreter = self.interpreter, None
            previous, self.previous = self.previous, None
        if interpreter is not None:
            close_interpreter(interpreter, deadline_s)
        if previous is not None:
            previous.close(deadline_s)


def close_interpreter(interpreter: SubInterpreter | MainInterpreter, deadline_s: float) -> None:
    """Closing runs what user code left behind (a generator's `finally` kept in `cache`), which no run
    timeout covers. Past the deadline the kernel exits (a C-level timer, which no Python code can hold
    off) and the service replaces it, as after a run's timeout."""
    faulthandler.dump_traceback_later(deadline_s, exit=True)
    try:
        interpreter.close()
    except Exception as exc:
        # Kept referenced: dropping the id of an interpreter that is still there would close it again,
        # from whichever thread the garbage collector runs on.
        _unclosed.append(interpreter)
        why = f"{type(exc).__name__}: {exc}"
        print(
            f"an interpreter could not be closed ({why}): its memory stays with this kernel", file=sys.stderr
        )
    finally:
        faulthandler.cancel_dump_traceback_later()


# Retired interpreters are dropped and closed one at a time on one thread: a burst of saves must not start
# a thread (and a stack, against the address-space limit) per interpreter.
chores: "queue.SimpleQueue[tuple[str, Slot]]" = queue.SimpleQueue()  # ("drop" | "close", slot)
_unclosed: list[Any] = []
PARK_S = 5.0
INTERPRETER_ROOM_MB = 64  # address space an interpreter may need while it is built and loads the sandbox


def address_space_mb() -> float:
    """This process's address space (what RLIMIT_AS counts)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") / 2**20
