"""A workspace's interpreter: a PEP 684 subinterpreter (a GIL of its own, CPython 3.12+) holding the sandbox,
or, for a dedicated kernel, the kernel's own main interpreter.

Calls cross with the low-level modules of each version, one string in and one out: the backport's
`Interpreter.call` compiles a runner and pickles per call (about 0.5 ms); this costs 30-80 us. From 3.14,
`concurrent.interpreters` calls natively with arguments and a return value.
"""

import marshal
import re
import sys
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent.parent  # runtimes/python: the sandbox package's parent
POOL_VERSION = (3, 12)


class InterpreterFailed(Exception):
    """An exception raised in an interpreter, by its type's name: the exception itself stays there."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def pool_refusal() -> str | None:
    """Why this Python cannot hold workspaces in subinterpreters, or None."""
    if sys.version_info >= POOL_VERSION:
        return None
    here = ".".join(map(str, sys.version_info[:3]))
    return f"pool mode needs CPython 3.12+ (a GIL per interpreter); this is {here}"


def sandbox_code() -> bytes:
    """The sandbox package's modules, compiled once per kernel: {name: (is_package, file, code)}, marshalled.
    An interpreter then loads them without reading or compiling files (about 13 ms an interpreter)."""
    modules = {}
    for path in sorted((FOLDER / "sandbox").glob("*.py")):
        package = path.stem == "__init__"
        name = "sandbox" if package else f"sandbox.{path.stem}"
        modules[name] = (package, str(path), compile(path.read_text(), str(path), "exec", dont_inherit=True))
    return marshal.dumps(modules)


# Run in a new subinterpreter, with `_sandbox` (the code above) and `_config` (the configure text) set. The
# sandbox is imported before anything else, through a finder that leaves with it: afterwards no import by
# name reaches it (it is out of sys.modules too), and the cross-interpreter module is out of sys.modules
# (kept only as `_reply`), so neither user code nor a package can import its way to them.
BOOT = """
def _boot(sandbox, config):
    import marshal, sys
    from importlib.machinery import ModuleSpec

    modules = marshal.loads(sandbox)

    class Finder:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name not in modules:
                return None
            spec = ModuleSpec(name, Finder, origin=modules[name][1], is_package=modules[name][0])
            spec.has_location = True
            return spec

        @staticmethod
        def create_module(spec):
            return None

        @staticmethod
        def exec_module(module):
            exec(modules[module.__name__][2], module.__dict__)

    sys.meta_path.insert(0, Finder)
    try:
        import sandbox.entry
    finally:
        sys.meta_path.remove(Finder)
        for name in modules:
            sys.modules.pop(name, None)
    channel = __import__(REPLY_MODULE)
    sys.modules.pop(REPLY_MODULE)
    sandbox.entry.ENTRY["configure"](config)
    return sandbox.entry.ENTRY, channel

ENTRY, _channel = _boot(_sandbox, _config)
del _boot, _sandbox, _config
"""


class SubInterpreter:
    """A subinterpreter holding the sandbox; `call` enters it on the calling thread."""

    REPLY_MODULE = ""  # what the subinterpreter answers through

    def __init__(self, sandbox: bytes, config: str) -> None:
        self.closed = False
        self.open()
        boot = BOOT.replace("REPLY_MODULE", repr(self.REPLY_MODULE))
        self.exec(boot, {"_sandbox": sandbox, "_config": config})

    def open(self) -> None:
        raise NotImplementedError

    def exec(self, script: str, shared: dict[str, Any]) -> None:
        raise NotImplementedError

    def call(self, op: str, text: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workspace (its leftovers run now), then destroy the interpreter."""
        if self.closed:
            return
        self.closed = True
        self.call("release", "")
        self.destroy()

    def destroy(self) -> None:
        raise NotImplementedError


class SubInterpreter312(SubInterpreter):
    REPLY_MODULE = "_xxinterpchannels"
    RUN = "_channel.send(_cid, ENTRY[_op](_text))\n_text = None\n"

    def open(self) -> None:
        import _xxsubinterpreters  # type: ignore[import-not-found]

        import _xxinterpchannels  # type: ignore[import-not-found]

        self.interpreters, self.channels = _xxsubinterpreters, _xxinterpchannels
        self.id = _xxsubinterpreters.create(isolated=True)
        self.channel_id = _xxinterpchannels.create()  # the channel lives as long as this object
        self.channel = int(self.channel_id)

    def exec(self, script: str, shared: dict[str, Any]) -> None:
        try:
            self.interpreters.run_string(self.id, script, shared)
        except self.interpreters.RunFailedError as exc:
            # "<class 'MemoryError'>: text"
            found = re.match(r"<class '([\w.]+)'>: ?(.*)", str(exc), re.DOTALL)
            name, message = found.groups() if found else ("RuntimeError", str(exc))
            raise InterpreterFailed(name.rpartition(".")[2], message) from None

    def call(self, op: str, text: str) -> str:
        self.exec(self.RUN, {"_cid": self.channel, "_op": op, "_text": text})
        reply: str = self.channels.recv(self.channel)
        return reply

    def destroy(self) -> None:
        self.interpreters.destroy(self.id)
        self.channels.destroy(self.channel)


def _run_313() -> None:  # its code runs in the subinterpreter, with that interpreter's globals
    _channel.put(_qid, ENTRY[_op](_text), 0, 3)  # type: ignore[name-defined]  # noqa: F821


class SubInterpreter313(SubInterpreter):
    REPLY_MODULE = "_interpqueues"

    def open(self) -> None:
        import _interpqueues  # type: ignore[import-not-found]
        import _interpreters  # type: ignore[import-not-found]

        self.interpreters, self.queues = _interpreters, _interpqueues
        self.id = _interpreters.create()
        self.queue = _interpqueues.create(0, 0, 3)  # unbounded; a value left behind by a closed one: dropped

    def exec(self, script: Any, shared: dict[str, Any]) -> None:
        failure = self.interpreters.exec(self.id, script, shared)
        if failure is not None:
            raise InterpreterFailed(failure.type.__name__, failure.msg or "")

    def call(self, op: str, text: str) -> str:
        self.exec(_run_313, {"_qid": self.queue, "_op": op, "_text": text})
        reply: str = self.queues.get(self.queue)[0]
        return reply

    def destroy(self) -> None:
        self.interpreters.destroy(self.id)
        self.queues.destroy(self.queue)


def _enter(op: str, text: str) -> str:  # runs in the subinterpreter (3.14+), where ENTRY is the sandbox's
    return ENTRY[op](text)  # type: ignore[name-defined,no-any-return]  # noqa: F821


class SubInterpreter314(SubInterpreter):
    REPLY_MODULE = "_interpreters"  # unused from 3.14: calls return their value

    def open(self) -> None:
        import concurrent.interpreters as interpreters  # type: ignore[import-not-found,unused-ignore]

        self.interpreter = interpreters.create()

    def exec(self, script: str, shared: dict[str, Any]) -> None:
        self.interpreter.prepare_main(shared)
        try:
            self.interpreter.exec(script)
        except Exception as exc:
            failure = getattr(exc, "excinfo", None)
            name = failure.type.__name__ if failure is not None else type(exc).__name__
            raise InterpreterFailed(name, str(getattr(failure, "msg", exc))) from None

    def call(self, op: str, text: str) -> str:
        try:
            reply: str = self.interpreter.call(_enter, op, text)
        except Exception as exc:
            failure = getattr(exc, "excinfo", None)
            name = failure.type.__name__ if failure is not None else type(exc).__name__
            raise InterpreterFailed(name, str(getattr(failure, "msg", exc))) from None
        return reply

    def destroy(self) -> None:
        self.interpreter.close()


def subinterpreter_class() -> type[SubInterpreter]:
    if sys.version_info >= (3, 14):
        return SubInterpreter314
    return SubInterpreter313 if sys.version_info >= (3, 13) else SubInterpreter312


class MainInterpreter:
    """The kernel's own interpreter, for a dedicated kernel: the sandbox as the kernel imported it."""

    def __init__(self, entry: dict[str, Any], config: str) -> None:
        self.entry = entry
        self.call("configure", config)

    def call(self, op: str, text: str) -> str:
        reply: str = self.entry[op](text)
        return reply

    def close(self) -> None:
        pass
