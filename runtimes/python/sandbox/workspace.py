"""A workspace's functions and their globals (with `cache` and `functions`) in this interpreter, and runs."""

import builtins
import gc
import json
import linecache
import sys
import time
import types
from typing import Any

from .attributes import format_attribute, safe_delattr, safe_getattr, safe_hasattr, safe_setattr
from .checks import GUARD, compile_function
from .imports import guarded_import
from .output import Capture, user_print
from .packages import needs_main_interpreter
from .patches import PATCHES, callable_only
from .results import error_of, finish
from .state import BUILTINS, capture, in_user_code, user_files

REMOVED_BUILTINS = (
    "open eval exec compile vars globals input breakpoint help exit quit copyright credits license".split()
)


def restricted_builtins() -> dict[str, Any]:
    import timeit

    PATCHES.update({("timeit", n): callable_only(getattr(timeit, n)) for n in ("timeit", "repeat", "Timer")})
    names = dict(vars(builtins))
    for name in REMOVED_BUILTINS:
        names.pop(name, None)
    names.update(
        __import__=guarded_import,
        getattr=safe_getattr,
        hasattr=safe_hasattr,
        setattr=safe_setattr,
        delattr=safe_delattr,
        print=user_print,
    )
    names[GUARD] = format_attribute
    return names


class Workspace:
    """A workspace's functions, their globals (with `cache` and `functions`), in this interpreter."""

    def __init__(self, request: dict[str, Any]) -> None:
        # The globals are a module's, in sys.modules as the `__module__` of the workspace's classes: with
        # `from __future__ import annotations`, dataclasses and typing look their annotations up there.
        self.module = types.ModuleType("functions")
        self.namespace: dict[str, Any] = self.module.__dict__
        self.functions: dict[str, Any] = {}
        self.namespace.update(__builtins__=BUILTINS, cache={}, functions=self.functions)
        sys.modules["functions"] = self.module
        for spec in request["functions"]:
            self.define(spec)

    def define(self, spec: dict[str, Any]) -> None:
        scope: dict[str, Any] = {}
        lines = spec["code"].splitlines(keepends=True)
        linecache.cache[spec["name"]] = (len(spec["code"]), None, lines, spec["name"])  # source in stacks
        user_files.add(spec["name"])
        exec(compile_function(spec), self.namespace, scope)  # defines `_user` in scope, not in globals
        inner, names, defaults = scope["_user"], list(spec["locals"]), spec["defaults"]

        def call(**parameters: Any) -> Any:
            values = {**json.loads(defaults), **parameters}
            return inner(values, *(values.get(p) for p in names))

        call.__name__ = call.__qualname__ = spec["name"]
        self.functions[spec["name"]] = call
        if spec["bindable"]:
            self.namespace[spec["name"]] = call

    def drop(self) -> None:
        """Let go of what user code made, as a run would: contained, with nowhere for logs to go.

        Dropping `cache` runs user code (a suspended generator's `finally`, weakref callbacks); the
        kernel's close deadline ends a loop there.
        """
        token, user = capture.set(Capture()), in_user_code.set(True)
        try:
            self.functions.clear()
            self.namespace.clear()
            if sys.modules.get("functions") is self.module:
                del sys.modules["functions"]
            gc.collect()
        except BaseException:  # a finalizer that raised: nothing is left to report it to
            pass
        finally:
            in_user_code.reset(user)
            capture.reset(token)

    def run(self, request: dict[str, Any]) -> str:
        logs = Capture()
        token, user = capture.set(logs), in_user_code.set(True)
        started = time.perf_counter()
        try:
            reply = self.call(request)
            reply["durationMs"] = (time.perf_counter() - started) * 1000
            reply["logs"] = logs.finish()
            return finish(reply)  # encoding may call user code too (`tolist`, `__str__` of keys)
        finally:
            in_user_code.reset(user)
            capture.reset(token)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        names = set(self.functions)
        try:
            result = self.functions[request["fn"]](**request["params"])
            if isinstance(result, types.CoroutineType):
                import asyncio  # on demand: importing it costs each interpreter about 3 MiB

                result = asyncio.run(result)
        except MemoryError:
            pass  # answered below: out of the except block, the traceback and the user's memory are gone
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are the user's errors too
            if needs_main_interpreter(exc):
                return {"status": "needs_main", "error": error_of(exc, names)}
            return {"status": "failed", "error": error_of(exc, names)}
        else:
            return {"status": "succeeded", "result": result}
        return {"status": "resource_limit", "error": {"name": "MemoryError", "message": "out of memory"}}
