"""What module views hand out in place of a module's own attribute: guarded attrgetter and methodcaller,
timeit that takes only callables, no atexit, weakref.finalize that never runs at close, dataclasses that
check field names."""

import types
from collections.abc import Callable
from typing import Any

from .attributes import safe_attrgetter, safe_methodcaller


def callable_only(real: Any) -> Any:
    """timeit compiles a string statement with the real builtins: only callables get through."""

    def guarded(stmt: Any = "pass", setup: Any = "pass", *args: Any, **kwargs: Any) -> Any:
        if isinstance(stmt, str) or isinstance(setup, str) and setup != "pass":
            raise ValueError("timeit in functions takes callables, not statements as text")
        return real(stmt, setup if not isinstance(setup, str) else "pass", *args, **kwargs)

    return guarded


def at_close(*args: Any, **kwargs: Any) -> Any:
    # code run when the interpreter closes is run by no one's request, and no timeout stops it
    raise RuntimeError("atexit callbacks are not available in functions: no run waits for them")


def finalizer_class() -> type:
    """weakref.finalize whose callbacks never run at the interpreter's close (see `at_close`)."""
    import weakref

    class Finalize(weakref.finalize):  # type: ignore[type-arg]
        __slots__ = ()

        def __init__(self, obj: Any, func: Any, /, *args: Any, **kwargs: Any) -> None:
            super().__init__(obj, func, *args, **kwargs)
            weakref.finalize.atexit.fset(self, False)  # type: ignore[attr-defined]

        @property
        def atexit(self) -> bool:
            return False

        @atexit.setter
        def atexit(self, value: bool) -> None:
            pass

    Finalize.__name__ = Finalize.__qualname__ = "finalize"
    Finalize.__module__ = "weakref"
    return Finalize


PATCHES: dict[tuple[str, str], Any] = {
    ("operator", "attrgetter"): safe_attrgetter,
    ("operator", "methodcaller"): safe_methodcaller,
    ("atexit", "register"): at_close,
}


def patch_dataclasses(dataclasses: types.ModuleType) -> None:
    """On first use only: dataclasses imports inspect, several MiB an interpreter."""

    def process_class(real: Any) -> Any:
        def guarded(cls: type, *args: Any) -> Any:
            # dataclasses write field names into source text that they exec
            for name in cls.__dict__.get("__annotations__", {}):
                if not isinstance(name, str) or not name.isidentifier():
                    raise TypeError(f"field names must be identifiers: {name!r}")
            return real(cls, *args)

        return guarded

    replace(dataclasses, "_process_class", process_class)


def replace(owner: Any, name: str, guard: Callable[[Any], Any]) -> None:
    """Put `guard(original)` in the place of `owner.name`: modules are per interpreter, so only here."""
    setattr(owner, name, guard(getattr(owner, name)))
