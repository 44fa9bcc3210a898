"""What installed packages may do while user code runs: refused modules get stand-ins or ImportErrors,
pickles may name only what user code could import."""

import importlib
import sys
import types
from typing import Any

from .checks import REFUSED_ATTRIBUTES
from .imports import UNSUPPORTED, allowed, view
from .patches import PATCHES
from .state import CONFIG, user_files

# Of the refused imports, what a package may import while user code runs: it gets a stand-in.
PACKAGE_ONLY_IMPORTS = frozenset({"ctypes", "_ctypes"})
# What ImportErrors of compiled extensions that cannot load in a subinterpreter say (CPython 3.12+,
# Cython, PyO3, numpy).
SUBINTERPRETER_FAILURES = (
    "subinterpreter",
    "sub-interpreter",
    "interpreter change detected",
    "per process",
)
# What pickles of ordinary data name outside the modules functions may import.
PICKLE_GLOBALS = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        *(
            ("builtins", name)
            for name in "object bool int float complex str bytes bytearray list tuple dict set frozenset "
            "slice range".split()
        ),
    }
)


def importing_package(frame: types.FrameType | None) -> str | None:
    """The top-level name of the installed package whose own code runs an import, or None for user code,
    the sandbox and the standard library (importlib included: it imports whatever name it is given)."""
    if frame is None or frame.f_code.co_filename in user_files:
        return None
    name = frame.f_globals.get("__name__")
    top = name.partition(".")[0] if isinstance(name, str) else ""
    if not top or top in sys.stdlib_module_names or top in ("__main__", "functions", "sandbox"):
        return None
    return top


def import_for_package(name: str, frame: types.FrameType | None) -> None:
    """A refused module imported while user code runs. A package's own import of one of
    PACKAGE_ONLY_IMPORTS gets a stand-in whose every attribute is an AttributeError (pandas imports
    ctypes and uses it only on Windows or on foreign buffers): the real module would put memory within
    reach of user code, through the package (numpy's ctypeslib, pandas' interchange). Any other import
    of a refused module is an ImportError."""
    package = importing_package(frame)
    why = UNSUPPORTED.get(name, "it reaches the process")
    if package is None or name not in PACKAGE_ONLY_IMPORTS:
        text = f"import of module {name!r} is not allowed in functions: not supported, because {why}"
        if package is not None:
            text += f"; package {package!r} imports it: use a version of {package!r} that does not (pin it)"
        raise ImportError(text, name=name)
    sys.modules[name] = stand_in(
        name,
        f"{name} is not available in functions (package {package!r} imported a "
        f"stand-in): not supported, because {why}",
    )


def stand_in(name: str, message: str) -> types.ModuleType:
    module = types.ModuleType(name, message)

    def unavailable(attribute: str) -> Any:
        raise AttributeError(message)

    module.__getattr__ = unavailable  # type: ignore[method-assign]  # PEP 562
    return module


def check_unpickle(module: Any, name: Any) -> None:
    """What a pickle names (a class, a function to call): only values user code could import itself, plus
    the few that pickles of ordinary data name. Unpickling (numpy's `load`, pandas' `read_pickle`) would
    otherwise call `builtins.eval` or `os.system` with arguments of the pickle's choosing."""
    if (module, name) in PICKLE_GLOBALS:
        return
    why = "pickles may name only values of modules that functions may import"
    if not isinstance(module, str) or not isinstance(name, str) or not allowed(module):
        raise UnpicklingRefused(f"unpickling {module}.{name} is not allowed in functions: {why}")
    parts = name.split(".")
    for part in parts:
        private = part.startswith("_") and module.partition(".")[0] in sys.stdlib_module_names
        if private or part in REFUSED_ATTRIBUTES or (part.startswith("__") and part.endswith("__")):
            raise UnpicklingRefused(f"unpickling {module}.{name} is not allowed in functions: {why}")
    value: Any = importlib.import_module(module)  # user code may import it: it is allowed
    view(value)  # the patches a first import by user code puts in place (dataclasses)
    if (module, parts[0]) in PATCHES:  # the guarded versions are for user code's imports only
        raise UnpicklingRefused(f"unpickling {module}.{name} is not allowed in functions: {why}")
    for part in parts:
        value = getattr(value, part, None)
    if isinstance(value, types.ModuleType) and not allowed(value.__name__):
        raise UnpicklingRefused(f"unpickling {module}.{name} is not allowed in functions: {why}")


class UnpicklingRefused(PermissionError):
    pass


def needs_main_interpreter(exc: BaseException) -> bool:
    """Whether a run failed for importing, in a subinterpreter, a compiled extension that cannot load in
    one: the workspace moves to a kernel of its own."""
    if not CONFIG["subinterpreter"]:  # already the main interpreter of a kernel of its own
        return False
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause).lower()
        ours = text.startswith("import of module")  # a refusal of the guard, which may name such a module
        if isinstance(cause, ImportError) and not ours and any(m in text for m in SUBINTERPRETER_FAILURES):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
