"""What runs inside one interpreter: a workspace's subinterpreter, or a dedicated kernel's main interpreter.

The kernel executes this file's source in a fresh interpreter and reaches it through `ENTRY` (one
JSON text in, one JSON text out), so nothing but strings crosses between interpreters. It imports
only the standard library. User code gets its own globals with restricted builtins: a guarded
`__import__`, read-only views of allowed modules, and no `open`, `eval`, `exec`, `compile`, `vars`.
"""

import __future__

import _thread
import ast
import atexit
import base64
import builtins
import contextvars
import datetime
import decimal
import errno
import gc
import importlib
import json
import linecache
import logging
import operator
import os
import string
import sys
import threading
import time
import traceback
import types
from _string import formatter_field_name_split  # type: ignore[import-not-found]
from collections.abc import Callable
from typing import Any

# Dunder attributes user code may name: the ones ordinary classes need. Everything else that starts
# and ends with `__` leads towards interpreter internals (__class__, __subclasses__, __globals__, ...).
ALLOWED_DUNDERS = frozenset(
    "__name__ __qualname__ __doc__ __init__ __post_init__ __len__ __iter__ __next__ __enter__ __exit__ "
    "__aenter__ __aexit__ __getitem__ __setitem__ __delitem__ __contains__ __str__ __repr__ __eq__ "
    "__ne__ __lt__ __le__ __gt__ __ge__ __hash__ __bool__ __call__ __add__ __sub__ __mul__ __truediv__ "
    "__floordiv__ __mod__ __pow__ __neg__ __abs__ __version__ __all__ __slots__ __module__".split()
)
# Attributes of frames, tracebacks, generators and code objects: the introspection routes.
REFUSED_ATTRIBUTES = frozenset(
    "f_globals f_locals f_builtins f_back f_code f_trace tb_frame tb_next gi_frame gi_code cr_frame "
    "cr_code ag_frame ag_code co_code mro".split()
)
# What user code may read of an object's class: `self.__class__.__name__` in a `__repr__`.
CLASS_NAMES = frozenset({"__name__", "__qualname__", "__module__"})
FORMAT_METHODS = frozenset({"format", "format_map"})
GUARD = "__sandbox_attribute__"  # what `x.format` compiles to: user code cannot name it
REFUSED_NAMES = frozenset({"__builtins__", "__loader__", "__spec__", GUARD})
REMOVED_BUILTINS = (
    "open eval exec compile vars globals input breakpoint help exit quit copyright credits license".split()
)
MODULE_ATTRIBUTES = frozenset({"__name__", "__doc__", "__version__", "__all__"})
LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}
CONFIG: dict[str, Any] = {
    "builtins": [],
    "packages": [],
    "refusedModules": ["logging.config"],  # dictConfig imports any callable named in its dict
    "maxEntries": 1000,
    "maxBytes": 1 << 20,
    "maxResultBytes": 10 << 20,
    "maxErrorChars": 64 << 10,
}
_current: contextvars.ContextVar["Capture | None"] = contextvars.ContextVar("capture", default=None)


# -- compiling ---------------------------------------------------------------------------------------


def refusal(node: ast.AST, names_a_class: bool = False) -> str | None:
    """Why a node of user code is refused at save, or None; `names_a_class` for an `x.__class__` whose
    `__name__`, `__qualname__` or `__module__` is read."""
    if isinstance(node, ast.Attribute):
        name = node.attr
        if name == "__class__" and not names_a_class:
            return (
                "attribute '__class__' is not allowed in functions: use type(x) (reading "
                "x.__class__.__name__, __qualname__ or __module__ is allowed)"
            )
        if name == "__class__":
            return None
        if name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS:
            return (
                f"attribute {name!r} is not allowed in functions: not supported, because it leads to "
                "the interpreter's internals"
            )
        if name in REFUSED_ATTRIBUTES:
            return (
                f"attribute {name!r} is not allowed in functions: not supported, because frames and code "
                "objects reach other code's variables"
            )
    if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
        return (
            f"name {node.id!r} is not allowed in functions: not supported, because it reaches the "
            "interpreter's internals"
        )
    return None


def class_names(node: ast.AST) -> ast.AST | None:
    """The `x.__class__` of `x.__class__.__name__` (or `__qualname__`, `__module__`) being read, else None."""
    if (
        isinstance(node, ast.Attribute)
        and node.attr in CLASS_NAMES
        and isinstance(node.ctx, ast.Load)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "__class__"
        and isinstance(node.value.ctx, ast.Load)
    ):
        return node.value
    return None


def check_tree(tree: ast.AST, name: str) -> None:
    """SyntaxError at the first refused node (in the user's line and column)."""
    reading_names: set[int] = set()  # `x.__class__` nodes whose name is read: ast.walk meets parents first
    for node in ast.walk(tree):
        if (inner := class_names(node)) is not None:
            reading_names.add(id(inner))
        if (why := refusal(node, id(node) in reading_names)) is not None:
            raise SyntaxError(why, (name, node.lineno, node.col_offset + 1, None))  # type: ignore[attr-defined]


def future_flags(body: list[ast.stmt], name: str) -> tuple[list[ast.stmt], int]:
    """`from __future__ import ...` at the start of a body (after its docstring): the body without them,
    and the compiler flags they stand for (the body is compiled as a function's, where they cannot be)."""
    start = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
    flags, end = 0, start
    for statement in body[start:]:
        if not isinstance(statement, ast.ImportFrom) or statement.module != "__future__":
            break
        for alias in statement.names:
            if alias.name not in __future__.all_feature_names:
                where = (name, statement.lineno, statement.col_offset + 1, None)
                raise SyntaxError(f"future feature {alias.name} is not defined", where)
            flags |= getattr(__future__, alias.name).compiler_flag
        end += 1
    return body[:start] + body[end:], flags


class FormatGuard(ast.NodeTransformer):
    """`x.format` becomes `__sandbox_attribute__(x, "format")`: str.format walks its arguments by name."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr not in FORMAT_METHODS or not isinstance(node.ctx, ast.Load):
            return node
        call = ast.Call(ast.Name(GUARD, ast.Load()), [node.value, ast.Constant(node.attr)], [])
        return ast.copy_location(call, node)


def is_async(body: list[ast.stmt]) -> bool:
    """`await` (or async for/with) in the body itself, not in a nested function, makes it async."""
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return False


def assigns_result(body: list[ast.stmt]) -> bool:
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and node.id == "result" and isinstance(node.ctx, ast.Store):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return False


def compile_function(spec: dict[str, Any]) -> types.CodeType:
    """The user's body as the body of `def <name>(parameters, *declared)`, with the user's own line numbers.

    Raises SyntaxError (with lineno/offset in the user's code) for code that does not compile or that
    names a refused attribute.
    """
    name, code = spec["name"], spec["code"]
    tree = ast.parse(code, filename=name)
    check_tree(tree, name)
    tree = FormatGuard().visit(tree)
    statements, flags = future_flags(tree.body, name)
    body = statements or [ast.Pass()]
    if assigns_result(body):
        body = [*body, ast.Return(ast.Name("result", ast.Load()))]
    args = ast.arguments(
        posonlyargs=[],
        args=[ast.arg("parameters"), *(ast.arg(p) for p in spec["locals"])],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=[],
    )
    kind = ast.AsyncFunctionDef if is_async(statements) else ast.FunctionDef
    extra: dict[str, Any] = {"type_params": []} if sys.version_info >= (3, 12) else {}
    definition = kind(name="_user", args=args, body=body, decorator_list=[], returns=None, **extra)
    module = ast.Module([definition], type_ignores=[])
    ast.fix_missing_locations(module)  # the wrapper itself sits on the user's line 1
    compiled: types.CodeType = compile(module, name, "exec", flags=flags, dont_inherit=True)
    return compiled


def check(request: dict[str, Any]) -> dict[str, Any]:
    """Compile every function; report the errors as {function, message, line, column}."""
    errors = []
    for spec in request["functions"]:
        try:
            compile_function(spec)
        except SyntaxError as exc:
            errors.append(
                {
                    "function": spec["name"],
                    "message": exc.msg,
                    "line": exc.lineno or 1,
                    "column": exc.offset or 1,
                }
            )
    return {"errors": errors}


# -- imports ----------------------------------------------------------------------------------------


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


def safe_name(name: Any) -> Any:
    if isinstance(name, str) and (
        (name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS)
        or name in REFUSED_ATTRIBUTES
    ):
        raise AttributeError(
            f"attribute {name!r} is not allowed in functions: not supported, because it leads to the "
            "interpreter's internals (use type(x) for a class)"
        )
    return name


def safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    value = getattr(obj, safe_name(name), *default)
    return guarded_format(value) if name in FORMAT_METHODS else value


def format_attribute(obj: Any, name: str) -> Any:
    return guarded_format(getattr(obj, name))


def check_format(text: Any) -> None:
    """Refuse a format string whose fields read refused attributes (`{0.__class__}`, `{0.gi_frame}`)."""
    if not isinstance(text, str) or "{" not in text:
        return
    for _literal, field, spec, _conversion in string.Formatter().parse(text):
        if field:
            _first, rest = formatter_field_name_split(field)
            for is_attribute, key in rest:
                if is_attribute:
                    safe_name(key)
        if spec:
            check_format(spec)


def guarded_format(value: Any) -> Any:
    """`str.format` and `str.format_map`, bound or not, check their format string first."""
    if value is str.format or value is str.format_map:
        method = value

        def unbound(text: Any, *args: Any, **kwargs: Any) -> Any:
            check_format(text)
            return method(text, *args, **kwargs)

        return unbound
    if isinstance(value, types.BuiltinMethodType) and isinstance(value.__self__, str):
        if value.__name__ in FORMAT_METHODS:
            check_format(value.__self__)
    return value


def safe_hasattr(obj: Any, name: str) -> bool:
    return hasattr(obj, safe_name(name))


def safe_setattr(obj: Any, name: str, value: Any) -> None:
    setattr(obj, safe_name(name), value)


def safe_delattr(obj: Any, name: str) -> None:
    delattr(obj, safe_name(name))


def safe_attrgetter(*names: str) -> Any:
    for name in names:
        for part in name.split("."):
            safe_name(part)
            if part in FORMAT_METHODS:
                raise AttributeError(
                    f"attrgetter of {part!r} is not allowed in functions: call the method by its name"
                )
    return operator.attrgetter(*names)


def safe_methodcaller(name: str, *args: Any, **kwargs: Any) -> Any:
    if name in FORMAT_METHODS:
        return lambda obj: safe_getattr(obj, name)(*args, **kwargs)
    return operator.methodcaller(safe_name(name), *args, **kwargs)


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


# -- containment: what allowed modules may do, whoever calls them --------------------------------------

# Audit events refused outright: processes, native code, code objects, tracing, heap walking.
REFUSED_EVENTS = frozenset(
    "os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty os.kill os.killpg "
    "os.chdir os.symlink os.chmod os.chown os.chflags os.setxattr os.removexattr subprocess.Popen pty.spawn "
    "sys.settrace sys.setprofile sys._current_frames sys._current_exceptions sys.addaudithook "
    "sys.setrecursionlimit gc.get_objects gc.get_referrers gc.get_referents ctypes.dlopen ctypes.dlsym "
    "ctypes.cdata ctypes.call_function socket.sethostname".split()
)
# Modules whose import alone hands out the process: other interpreters, native calls.
REFUSED_IMPORTS = frozenset(
    "_xxsubinterpreters _xxinterpchannels _interpreters _interpchannels _interpqueues backports.interpreters "
    "concurrent.interpreters _ctypes ctypes".split()
)
# Of those, what a package may import while user code runs: it gets a stand-in (`import_for_package`).
PACKAGE_ONLY_IMPORTS = frozenset({"ctypes", "_ctypes"})
# Why modules stay out of reach whatever the settings say: the end of a refusal's message.
_OTHER_INTERPRETERS = "it reaches the other workspaces' interpreters"
UNSUPPORTED = {
    **{name: _OTHER_INTERPRETERS for name in REFUSED_IMPORTS},
    "ctypes": "it reads and writes any memory of the kernel process",
    "_ctypes": "it reads and writes any memory of the kernel process",
    "logging.config": "its dictConfig imports any callable that its configuration names",
}
# What ImportErrors of compiled extensions that cannot load in a subinterpreter say (CPython 3.12+,
# Cython, PyO3, numpy).
SUBINTERPRETER_FAILURES = (
    "subinterpreter",
    "sub-interpreter",
    "interpreter change detected",
    "per process",
)
# Standard-library modules that packages import by name (charset_normalizer: `encodings.<codec>`).
BY_NAME_ONLY = frozenset({"encodings"})
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
# Events on paths: reads must stay in the Python installation and the private folder, writes in it.
PATH_EVENTS = frozenset({"os.listdir", "os.scandir", "os.remove", "os.rmdir", "os.mkdir", "os.truncate"})
WRITE_EVENTS = frozenset(
    {"os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.rename", "os.link", "os.utime"}
)
READABLE_FILES = ("/etc/mime.types", "/usr/share/zoneinfo")  # what mimetypes and time zones read
_user: contextvars.ContextVar[bool] = contextvars.ContextVar("user", default=False)
_roots: dict[str, tuple[str, ...]] = {"read": (), "write": ()}
_user_files: set[str] = set()  # the file names of user code: its functions' names


def contained() -> bool:
    """A workspace's subinterpreter is contained throughout (also code run at its close, `__del__`, atexit);
    a dedicated kernel's main interpreter only while user code runs, since the kernel shares it."""
    return __name__ == "__main__" or _user.get()


def audit(event: str, args: tuple[Any, ...]) -> None:
    if event in REFUSED_EVENTS or event.startswith("ctypes."):
        if contained():
            raise PermissionError(f"{event} is not allowed in functions: {refused_event_reason(event)}")
    elif event == "open":
        if contained():
            check_open(args[0], args[1], args[2])
    elif event in PATH_EVENTS or event in WRITE_EVENTS:
        if contained():
            for path in args[:2] if event in ("os.rename", "os.link") else args[:1]:
                check_path(event, path, write=event in WRITE_EVENTS)
    elif event == "import" and args[0] in REFUSED_IMPORTS and _user.get():  # the kernel imports them
        import_for_package(args[0], sys._getframe(1))
    elif event == "socket.__new__" and contained():
        check_socket(sys._getframe(1))
        if not _explained and CONFIG.get("egress"):
            explain_refusals(CONFIG["egress"])
    elif event == "pickle.find_class" and _user.get():
        check_unpickle(args[0], args[1])
    elif event == "code.__new__" and sys._getframe(1).f_code.co_filename in _user_files:
        # bytecode made by hand can read and write any memory; the stdlib's own `code.replace` may go on
        raise PermissionError(
            "code.__new__ is not allowed in functions: not supported, because hand-made bytecode reads and "
            "writes any memory"
        )


def refused_event_reason(event: str) -> str:
    if event.startswith("ctypes."):
        return "not supported, because native calls read and write any memory of the kernel process"
    if event.startswith(("os.", "subprocess.", "pty.", "socket.")):
        return "not supported, because it reaches the kernel process itself or other processes"
    if event.startswith(("sys.", "gc.")):
        return "not supported, because it reaches other code's frames, objects or the interpreter's settings"
    return "not supported"


def importing_package(frame: types.FrameType | None) -> str | None:
    """The top-level name of the installed package whose own code runs an import, or None for user code,
    the sandbox and the standard library (importlib included: it imports whatever name it is given)."""
    if frame is None or frame.f_code.co_filename in _user_files or frame.f_globals is globals():
        return None
    name = frame.f_globals.get("__name__")
    top = name.partition(".")[0] if isinstance(name, str) else ""
    if not top or top in sys.stdlib_module_names or top in ("__main__", "functions"):
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


def check_socket(frame: types.FrameType) -> None:
    """User code may make sockets, not adopt a descriptor (`socket(fileno=n)`): it may be another's."""
    if frame.f_code.co_filename in _user_files:  # the C constructor called directly (through super())
        raise PermissionError(
            "socket.__new__ is not allowed in functions: make sockets with socket.socket(...)"
        )
    if frame.f_locals.get("fileno") is None:
        return
    caller: types.FrameType | None = frame
    while caller is not None and caller.f_code.co_filename == frame.f_code.co_filename:
        caller = caller.f_back  # out of socket.py (accept() adopts the descriptors it gets)
    if caller is not None and caller.f_code.co_filename in _user_files:
        raise PermissionError(
            "socket of an open descriptor is not allowed in functions: not supported, because the "
            "descriptor may be another workspace's connection"
        )


EGRESS_HINTS = {
    "public": "FUNCTIONS_EGRESS=public lets functions reach public addresses only; "
    "an internal service can be allowed with FUNCTIONS_EGRESS_ALLOW",
    "none": "FUNCTIONS_EGRESS=none lets functions reach no address; "
    "one can be allowed with FUNCTIONS_EGRESS_ALLOW",
}
_explained = False


def explain_refusals(mode: str) -> None:
    """The service refuses a forbidden connection with EACCES (adapters/hosts/egress_guard.py); the socket
    methods that reach an address say so and name the settings. Patched at the first socket of an
    interpreter, as socket.py loads only when something needs it (urllib, http.client)."""
    global _explained
    _explained = True
    sockets = sys.modules.get("socket")
    hint = EGRESS_HINTS.get(mode)
    if sockets is None or hint is None:
        return

    def explained(real: Any) -> Any:
        def guarded(self: Any, *args: Any) -> Any:
            try:
                return real(self, *args)
            except PermissionError as exc:
                if exc.errno != errno.EACCES:
                    raise
                given = {"connect": args[:1], "sendto": args[-1:], "sendmsg": args[3:4]}[real.__name__]
                address = given[0] if given else "its peer"
                raise PermissionError(
                    exc.errno, f"{exc.strerror}: {address!r} refused by the egress policy ({hint})"
                ) from None

        return guarded

    for name in ("connect", "sendto", "sendmsg"):  # connect_ex answers a number: nothing to say it in
        replace(sockets.socket, name, explained)


def check_open(path: Any, mode: Any, flags: int) -> None:
    if isinstance(mode, str):
        write = any(c in mode for c in "wax+")
    else:
        write = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND) != 0
    if isinstance(path, int):  # an open descriptor: only one of a file in the private folder
        try:
            path = os.readlink(f"/proc/self/fd/{path}").removesuffix(" (deleted)")
        except OSError:
            path = ""
    check_path("open", path, write)


def check_path(event: str, path: Any, write: bool) -> None:
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        real = ""
    roots = _roots["write"] if write else _roots["read"]
    if not real or not any(real == root or real.startswith(root + os.sep) for root in roots):
        raise PermissionError(
            f"{event} of {os.fsdecode(path) if real else path!r} is not allowed in functions"
        )


def private_folder() -> str | None:
    """A temporary folder of its own, as this interpreter's TMPDIR: tempfile works, nothing else writes."""
    base = os.environ.get("TMPDIR") or "/tmp"
    folder = os.path.join(os.path.realpath(base), f"functions-{os.urandom(8).hex()}")
    try:
        os.mkdir(folder, 0o700)
    except OSError:
        return None
    # this interpreter's own os.environ only: putenv would change every interpreter's process environment
    os.environ._data[os.environ.encodekey("TMPDIR")] = os.environ.encodevalue(folder)  # type: ignore[attr-defined]
    atexit.register(remove_folder, folder)  # when the interpreter closes
    return folder


def remove_folder(folder: str) -> None:
    import shutil  # only now: each interpreter's imports cost memory under the kernel's address-space limit

    shutil.rmtree(folder, ignore_errors=True)


def install_containment() -> None:
    readable = {os.path.dirname(os.__file__), *sys.path, *CONFIG.get("path", []), *READABLE_FILES}
    # a dedicated kernel's main interpreter holds one workspace: the kernel's own TMPDIR is its folder
    mine = private_folder() if __name__ == "__main__" else os.environ.get("TMPDIR")
    writable = (os.path.realpath(mine),) if mine else ()
    _roots["read"] = tuple(os.path.realpath(folder) for folder in readable if folder) + writable
    _roots["write"] = writable
    sys.addaudithook(audit)
    patch_stdlib()


def real_builtins(names: Any) -> bool:
    """Whether a namespace is a module's (typing passes a class's module globals as locals too)."""
    return isinstance(names, dict) and names.get("__builtins__") in (builtins, vars(builtins))


def replace(owner: Any, name: str, guard: Callable[[Any], Any]) -> None:
    """Put `guard(original)` in the place of `owner.name`: modules are per interpreter, so only here."""
    setattr(owner, name, guard(getattr(owner, name)))


def patch_stdlib() -> None:
    """Close the stdlib's own routes to `eval`/`exec` of text and to attribute walking by name."""
    import typing  # already loaded by this file

    def evaluate(real: Any) -> Any:
        def guarded(self: Any, globalns: Any, localns: Any, *rest: Any, **named: Any) -> Any:
            # eval() of an annotation string: in a module's globals it would run with that module's
            # names and the real builtins; fresh globals would get the real builtins. Give it ours.
            if not isinstance(globalns, dict) or any(real_builtins(names) for names in (globalns, localns)):
                raise NameError("annotations as text are evaluated only with the globals of functions")
            if "__builtins__" not in globalns:
                globalns = {**globalns, "__builtins__": BUILTINS}
            return real(self, globalns, localns, *rest, **named)  # 3.13: recursive_guard is keyword-only

        return guarded

    def get_field(real: Any) -> Any:
        def guarded(self: Any, field_name: str, args: Any, kwargs: Any) -> Any:
            check_format("{" + field_name + "}")
            return real(self, field_name, args, kwargs)

        return guarded

    def style_format(real: Any) -> Any:
        def guarded(self: Any, record: logging.LogRecord) -> Any:
            check_format(self._fmt)
            return real(self, record)

        return guarded

    def start_thread(real: Any) -> Any:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # a thread of user code would outlive its run, untimed (and hold a 3.11 interpreter's GIL)
            if contained():
                raise RuntimeError(
                    "threads are not allowed in functions: not supported, because a thread would outlive "
                    "its run, untimed"
                )
            return real(*args, **kwargs)

        return guarded

    replace(typing.ForwardRef, "_evaluate", evaluate)
    replace(string.Formatter, "get_field", get_field)
    replace(logging.StrFormatStyle, "_format", style_format)
    # 3.13 starts threads through `_start_joinable_thread`, older versions through `_start_new_thread`
    joinable = hasattr(threading, "_start_joinable_thread")
    replace(threading, "_start_joinable_thread" if joinable else "_start_new_thread", start_thread)
    replace(importlib, "import_module", import_by_name)


def import_by_name(real: Any) -> Any:
    """`importlib.import_module` while user code runs: packages import by name, sometimes a name that user
    code gave them (pandas' `import_optional_dependency`), so a standard-library module that functions
    may not import (`os`, `ctypes`) is refused here too. Other packages, and `encodings`, pass."""

    def guarded(name: str, package: str | None = None) -> Any:
        if _user.get() and isinstance(name, str):
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


# -- logs -------------------------------------------------------------------------------------------


class Capture:
    """One run's logs, capped like the Node runtime's: the last entry says what was dropped.

    Printed text is kept as a terminal shows it: an entry ends where a write ends with a newline, so
    `print(x, end=",")` in a loop makes one entry, and so do the pieces a package's `print` writes.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []
        self.bytes = self.dropped = self.dropped_bytes = 0
        self.lock = threading.Lock()
        self.pending: list[str] = []  # printed text not yet ended by a newline
        self.pending_level = "log"
        self.pending_bytes = 0

    def add(self, level: str, message: str) -> None:
        with self.lock:
            self._end_line(keep_blank=True)
            self._append(level, message)

    def write(self, level: str, text: str, keep_blank: bool) -> None:
        """Printed text; `keep_blank` for the user's own `print()`, whose empty lines are entries."""
        with self.lock:
            if self.pending and level != self.pending_level:
                self._end_line(keep_blank)
            self.pending_level = level
            self.pending.append(text)
            self.pending_bytes += len(text)
            if text.endswith("\n") or self.pending_bytes > CONFIG["maxBytes"]:
                self._end_line(keep_blank)

    def _end_line(self, keep_blank: bool) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        text = text[:-1] if text.endswith("\n") else text
        if keep_blank or text.strip():
            self._append(self.pending_level, text)

    def _append(self, level: str, message: str) -> None:
        size = len(message.encode("utf-8", "replace"))
        if len(self.entries) >= CONFIG["maxEntries"] or self.bytes + size > CONFIG["maxBytes"]:
            self.dropped += 1
            self.dropped_bytes += size
            return
        self.bytes += size
        self.entries.append({"level": level, "message": message, "timestamp": now()})

    def finish(self) -> list[dict[str, str]]:
        with self.lock:
            self._end_line(keep_blank=False)
        if self.dropped:
            limits = CONFIG["maxEntries"], CONFIG["maxBytes"]
            if len(self.entries) >= CONFIG["maxEntries"]:
                last = self.entries.pop()
                self.dropped += 1
                self.dropped_bytes += len(last["message"].encode("utf-8", "replace"))
            self.entries.append(
                {
                    "level": "warn",
                    "message": f"{self.dropped} more log entries ({self.dropped_bytes} bytes) were dropped: "
                    f"a run keeps at most {limits[0]} entries and {limits[1]} bytes of logs",
                    "timestamp": now(),
                }
            )
            self.dropped = 0
        return self.entries


def now() -> str:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def log(level: str, message: str) -> None:
    capture = _current.get()
    if capture is not None:  # outside a run (a thread the user left behind): nowhere to go
        capture.add(level, message)


def write(level: str, text: str, keep_blank: bool) -> None:
    capture = _current.get()
    if capture is not None:
        capture.write(level, text, keep_blank)


def user_print(
    *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    if file is not None and file is not sys.stdout and file is not sys.stderr:
        print(*args, sep=sep, end=end, file=file, flush=flush)
        return
    for name, value in (("sep", sep), ("end", end)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be None or a string, not {type(value).__name__}")
    text = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
    write("error" if file is sys.stderr else "log", text, keep_blank=True)


class Stream:
    """sys.stdout/sys.stderr of the interpreter: never the kernel's protocol pipe."""

    def __init__(self, level: str) -> None:
        self.level = level

    def write(self, text: str) -> int:
        write(self.level, text, keep_blank=False)
        return len(text)

    def flush(self) -> None:
        pass


class Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            log(LEVELS.get(record.levelno, "error"), record.getMessage())
        except Exception:
            self.handleError(record)


def configure_output() -> None:
    sys.stdout, sys.stderr = Stream("log"), Stream("error")
    root = logging.getLogger()
    root.handlers[:] = [Handler()]
    root.setLevel(logging.DEBUG)  # logging.info() is captured too, as console.info is in JavaScript
    logging.getLogger("asyncio").setLevel(logging.WARNING)  # its debug lines are ours, not the user's
    logging.captureWarnings(True)
    logging.raiseExceptions = False


# -- results ----------------------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 1 << 53 else float(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if hasattr(type(value), "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} cannot become JSON")


_encode = json.JSONEncoder(default=to_json, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def stack_of(exc: BaseException, names: set[str]) -> str:
    """The traceback in the user's terms: only frames of the workspace's functions, in their own lines."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in names]
    lines = ["Traceback (most recent call last):"]
    for frame in frames:
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.filename}')
        if frame.line:
            lines.append(f"    {frame.line}")
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "\n".join(line.rstrip("\n") for line in lines)


def error_of(exc: BaseException, names: set[str]) -> dict[str, Any]:
    return {"name": type(exc).__name__, "message": clip(str(exc)), "stack": clip(stack_of(exc, names))}


def clip(text: str) -> str:
    """An error's text is for people: a 50 MB message would cost the kernel and the service its size."""
    limit = CONFIG["maxErrorChars"]
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def needs_main_interpreter(exc: BaseException) -> bool:
    """Whether a run failed for importing, in a subinterpreter, a compiled extension that cannot load in
    one: the workspace moves to a kernel of its own."""
    if __name__ != "__main__":  # already the main interpreter of a kernel of its own
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


# -- the workspace ----------------------------------------------------------------------------------


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
        _user_files.add(spec["name"])
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
        """Let go of what user code made, as a run would: with the GIL nudged and nowhere for logs to go.

        Dropping `cache` runs user code (a suspended generator's `finally`, weakref callbacks); a loop
        there must not hold the GIL that every interpreter of a 3.11 kernel shares. The kernel's close
        deadline ends it.
        """
        token, user = _current.set(Capture()), _user.set(True)
        nudger = GilNudger()
        try:
            nudger.start()
            self.functions.clear()
            self.namespace.clear()
            if sys.modules.get("functions") is self.module:
                del sys.modules["functions"]
            gc.collect()
        except BaseException:  # a finalizer that raised: nothing is left to report it to
            pass
        finally:
            nudger.stop()
            _user.reset(user)
            _current.reset(token)

    def run(self, request: dict[str, Any]) -> str:
        capture = Capture()
        token, user = _current.set(capture), _user.set(True)
        started = time.perf_counter()
        nudger = GilNudger()
        try:
            nudger.start()
            reply = self.call(request)
            reply["durationMs"] = (time.perf_counter() - started) * 1000
            reply["logs"] = capture.finish()
            return finish(reply)  # encoding may call user code too (`tolist`, `__str__` of keys)
        finally:
            nudger.stop()
            _user.reset(user)
            _current.reset(token)

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


NUDGER_STACK = 256 * 1024


class GilNudger:
    """On Python < 3.12, keep a busy run from holding the GIL that every interpreter of the kernel shares.

    A 3.11 thread waiting for the GIL asks for it through its *own* interpreter's eval breaker, which
    a thread looping in another interpreter never reads: the kernel's main thread would wait for the
    whole run. A thread of this interpreter waking every 5 ms asks in the right place. Raw `_thread`
    calls cost half what `threading.Thread` does (about 100 us a run). Not a context manager: after a
    MemoryError, a generator's exit can fail before its `finally`, leaving the thread behind, and
    closing an interpreter with a live thread aborts the whole kernel. `stop` allocates nothing.
    """

    def __init__(self) -> None:
        self.enabled = bool(CONFIG.get("nudgeGil"))
        self.running = False
        self.stopping, self.started = _thread.allocate_lock(), _thread.allocate_lock()
        self.gone: list[Any] = []

    def start(self) -> None:
        if not self.enabled:
            return
        _thread.stack_size(NUDGER_STACK)  # this interpreter's threads only; it needs next to none
        self.stopping.acquire()
        self.started.acquire()
        _thread.start_new_thread(self._nudge, ())
        self.running = True

    def _nudge(self) -> None:
        try:
            self.gone.append(_thread._set_sentinel())  # type: ignore[attr-defined]  # released when this thread's state is gone
        finally:
            self.started.release()
        while not self.stopping.acquire(timeout=0.005):
            pass

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        self.stopping.release()
        self.started.acquire()
        if self.gone:
            self.gone[0].acquire()  # a 3.11 interpreter that still has a second thread refuses calls


def finish(reply: dict[str, Any]) -> str:
    """The reply as JSON text the kernel can write as UTF-8."""
    text = encoded(reply)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ('\ud800') in a result, a log or a message: it becomes '?'
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def encoded(reply: dict[str, Any]) -> str:
    """The reply as JSON text; a result that JSON cannot hold, or too big a one, changes the status."""
    try:
        text = _encode(reply)
    except (TypeError, ValueError, RecursionError) as exc:
        reply.pop("result", None)
        reply["status"] = "not_serializable"
        reply["error"] = {"name": "ResultNotSerializable", "message": f"the result cannot become JSON: {exc}"}
        return _encode(reply)
    except MemoryError:
        reply.pop("result", None)
        reply.update(
            status="resource_limit", error={"name": "MemoryError", "message": "the result is too large"}
        )
        return _encode(reply)
    if len(text) > CONFIG["maxResultBytes"] and reply["status"] == "succeeded":
        reply.pop("result")
        limit = CONFIG["maxResultBytes"]
        reply.update(
            status="resource_limit", error={"name": "ResultTooLarge", "message": f"result over {limit} bytes"}
        )
        return _encode(reply)
    return text


_workspace: Workspace | None = None


def op_configure(text: str) -> str:
    global BUILTINS
    CONFIG.update(json.loads(text))
    sys.path[:0] = [folder for folder in CONFIG.get("path", []) if folder not in sys.path]
    configure_output()
    BUILTINS = restricted_builtins()
    install_containment()
    return "{}"


def op_load(text: str) -> str:
    global _workspace
    _workspace = Workspace(json.loads(text))
    return "{}"


def op_run(text: str) -> str:
    assert _workspace is not None, "run before load"
    return _workspace.run(json.loads(text))


def op_check(text: str) -> str:
    return json.dumps(check(json.loads(text)))


def op_release(text: str) -> str:
    """Before the kernel closes this interpreter: drop the workspace, and let the close come from any thread.

    Closing runs `threading._shutdown`, which before 3.13 waits for the lock of the thread that first
    imported `threading` here, released only when that thread's state goes. Kernel calls reuse the
    interpreter's first thread state, so the close would wait forever (3.11 and 3.12), unless the
    closing thread happens to be that thread. Nothing here is worth waiting for: user code cannot
    start threads, and the kernel's own have left.
    """
    global _workspace
    workspace, _workspace = _workspace, None
    if workspace is not None:
        workspace.drop()
    if sys.version_info < (3, 13):
        main = threading._main_thread  # type: ignore[attr-defined]
        lock = main._tstate_lock
        if lock is not None and lock.locked():
            lock.release()
        main._ident = None  # `_shutdown` must not take the closing thread for this one and release it again
    return "{}"


BUILTINS: dict[str, Any] = {}
ENTRY = {"configure": op_configure, "load": op_load, "run": op_run, "check": op_check, "release": op_release}
