"""The guarded `__import__` of user code, read-only module views, and what import refusals say."""

import builtins
import sys
import types
from typing import Any

from .patches import PATCHES, finalizer_class, patch_dataclasses
from .state import CONFIG, in_user_code

MODULE_ATTRIBUTES = frozenset({"__name__", "__doc__", "__version__", "__all__"})
# The kernel's own modules: the sandbox (this package) and the kernel script with its helpers. The kernel
# takes them out of sys.modules and off sys.path before user code runs; refused by name all the same.
SANDBOX_MODULES = frozenset({"sandbox", "kernel", "hosting"})
# Modules whose import alone hands out the process: other interpreters, native calls, the sandbox itself.
REFUSED_IMPORTS = frozenset(
    "_xxsubinterpreters _xxinterpchannels _interpreters _interpchannels _interpqueues backports.interpreters "
    "concurrent.interpreters _ctypes ctypes".split()
).union(SANDBOX_MODULES)
# Why modules stay out of reach whatever the settings say: the end of a refusal's message.
_OTHER_INTERPRETERS = "it reaches the other workspaces' interpreters"
UNSUPPORTED = {
    **{name: _OTHER_INTERPRETERS for name in REFUSED_IMPORTS},
    "ctypes": "it reads and writes any memory of the kernel process",
    "_ctypes": "it reads and writes any memory of the kernel process",
    "logging.config": "its dictConfig imports any callable that its configuration names",
    **{name: "it is the sandbox that functions run in" for name in SANDBOX_MODULES},
}
# Standard-library modules that packages import by name (charset_normalizer: `encodings.<codec>`).
BY_NAME_ONLY = frozenset({"encodings"})
# Standard-library modules that packages import by name (charset_normalizer: `encodings.<codec>`).
BY_NAME_ONLY = frozenset({"encodings"})


def allowed(name: str) -> bool:
    top = name.partition(".")[0]
    return (
        (top in CONFIG["builtins"] or top in CONFIG["packages"])
        and name not in CONFIG["refusedModules"]
        and unsupported(name) is None
    )


def unsupported(name: str) -> str | None:
    """Why a module stays out of reach whatever the settings say, or None."""
    for refused in (name, *(name[:i] for i, c in enumerate(name) if c == ".")):
        if refused in UNSUPPORTED:
            return UNSUPPORTED[refused]
    return None


def refused_import(name: str) -> ImportError:
    top = name.partition(".")[0]
    why = unsupported(name)
    if why is not None and (
        unsupported(top) is not None or top in CONFIG["builtins"] or top in CONFIG["packages"]
    ):
        return ImportError(
            f"import of module {name!r} is not allowed in functions: not supported, because {why}", name=name
        )
    if name != top and allowed(top):
        return ImportError(f"import of module {name!r} is not allowed in functions: not supported", name=name)
    setting = (
        "PYTHON_BUILTIN_MODULES" if top in sys.stdlib_module_names else "PYTHON_PACKAGES_WHITELIST_IMPORT"
    )
    return ImportError(f"import of module {top!r} is not allowed: add it to {setting} to allow it", name=top)


def not_installed(exc: ModuleNotFoundError, name: str) -> ModuleNotFoundError:
    """A whitelisted package, or a module it needs, that is not installed: say how to install it."""
    top, missing = name.partition(".")[0], exc.name or ""
    if missing == top:
        why = f"{top!r} is in PYTHON_PACKAGES_WHITELIST_IMPORT but not installed"
    elif missing.partition(".")[0] == top:
        return exc  # a submodule that the package does not have
    else:
        why = f"{top!r} needs module {missing!r}, which is not installed"
    fix = "add its distribution to PYTHON_PACKAGES_AUTO_INSTALL (installed at start-up)"
    return ModuleNotFoundError(f"No module named {missing!r}: {why}; {fix}", name=missing)


_views: dict[str, "ModuleView"] = {}
_modules: dict[int, types.ModuleType] = {}


class ModuleView:
    """A read-only view of an allowed module: no `_private` attributes, no refused modules."""

    __slots__ = ("__weakref__",)

    def __getattribute__(self, name: str) -> Any:
        module = _modules[id(self)]
        if name.startswith("_") and name not in MODULE_ATTRIBUTES:
            raise AttributeError(f"module {module.__name__!r} has no public attribute {name!r}")
        value = PATCHES.get((module.__name__, name)) or getattr(module, name)
        if isinstance(value, types.ModuleType):
            if not allowed(value.__name__):
                raise AttributeError(
                    f"module {module.__name__!r} does not hand out module {value.__name__!r}"
                )
            return view(value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("modules are read-only in functions")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("modules are read-only in functions")

    def __dir__(self) -> list[str]:
        return [n for n in dir(_modules[id(self)]) if not n.startswith("_")]

    def __repr__(self) -> str:
        return f"<module {_modules[id(self)].__name__!r}>"


def view(module: types.ModuleType) -> ModuleView:
    found = _views.get(module.__name__)
    if found is None:
        if module.__name__ == "dataclasses":
            patch_dataclasses(module)
        if module.__name__ == "weakref":
            PATCHES["weakref", "finalize"] = finalizer_class()
        found = _views[module.__name__] = ModuleView()
        _modules[id(found)] = module
    return found


def guarded_import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> ModuleView:
    if level != 0:
        raise ImportError(
            "relative imports are not allowed in functions: functions have no package to be relative to"
        )
    if not allowed(name):
        raise refused_import(name)
    for item in fromlist or ():
        if isinstance(item, str) and item != "*" and not item.startswith("_"):
            full = f"{name}.{item}"
            if full in CONFIG["refusedModules"]:
                raise refused_import(full)
    if fromlist and "*" in fromlist:
        raise ImportError("`from ... import *` is not allowed in functions: import the names you use")
    try:
        module = builtins.__import__(name, None, None, fromlist, 0)
    except ModuleNotFoundError as exc:
        top = name.partition(".")[0]
        if top not in CONFIG["packages"] or not exc.name or exc.name in sys.stdlib_module_names:
            raise
        better = not_installed(exc, name)
        if better is exc:
            raise
        raise better from None
    return view(module)


def import_by_name(real: Any) -> Any:
    """`importlib.import_module` while user code runs: packages import by name, sometimes a name that user
    code gave them (pandas' `import_optional_dependency`), so a standard-library module that functions
    may not import (`os`, `ctypes`) is refused here too. Other packages, and `encodings`, pass."""

    def guarded(name: str, package: str | None = None) -> Any:
        if in_user_code.get() and isinstance(name, str):
            absolute = name
            if name.startswith("."):
                import importlib.util

                absolute = importlib.util.resolve_name(name, package)
            if not importable_by_name(absolute):
                raise refused_import(absolute)
        return real(name, package)

    return guarded


def importable_by_name(name: str) -> bool:
    top = name.partition(".")[0]
    if unsupported(name) is not None:
        return False
    return top not in sys.stdlib_module_names or top in BY_NAME_ONLY or allowed(name)
