"""Containment: what allowed modules may do, whoever calls them (the audit hook), and the stdlib's own
routes to `eval` of text and attribute walking, closed in this interpreter's copy of each module."""

import atexit
import builtins
import errno
import importlib
import logging
import os
import string
import sys
import threading
import types
from typing import Any

from .attributes import check_format
from .imports import REFUSED_IMPORTS, import_by_name
from .packages import check_unpickle, import_for_package
from .patches import replace
from .state import BUILTINS, CONFIG, contained, in_user_code, roots, user_files

# Audit events refused outright: processes, native code, code objects, tracing, heap walking.
REFUSED_EVENTS = frozenset(
    "os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty os.kill os.killpg "
    "os.chdir os.symlink os.chmod os.chown os.chflags os.setxattr os.removexattr subprocess.Popen pty.spawn "
    "sys.settrace sys.setprofile sys._current_frames sys._current_exceptions sys.addaudithook "
    "sys.setrecursionlimit gc.get_objects gc.get_referrers gc.get_referents ctypes.dlopen ctypes.dlsym "
    "ctypes.cdata ctypes.call_function socket.sethostname".split()
)
PATH_EVENTS = frozenset({"os.listdir", "os.scandir", "os.remove", "os.rmdir", "os.mkdir", "os.truncate"})
WRITE_EVENTS = frozenset(
    {"os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.rename", "os.link", "os.utime"}
)
READABLE_FILES = ("/etc/mime.types", "/usr/share/zoneinfo")  # what mimetypes and time zones read


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
    elif event == "import" and args[0] in REFUSED_IMPORTS and in_user_code.get():  # the kernel imports them
        import_for_package(args[0], sys._getframe(1))
    elif event == "socket.__new__" and contained():
        check_socket(sys._getframe(1))
        if not _explained and CONFIG.get("egress"):
            explain_refusals(CONFIG["egress"])
    elif event == "pickle.find_class" and in_user_code.get():
        check_unpickle(args[0], args[1])
    elif event == "code.__new__" and sys._getframe(1).f_code.co_filename in user_files:
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


def check_socket(frame: types.FrameType) -> None:
    """User code may make sockets, not adopt a descriptor (`socket(fileno=n)`): it may be another's."""
    if frame.f_code.co_filename in user_files:  # the C constructor called directly (through super())
        raise PermissionError(
            "socket.__new__ is not allowed in functions: make sockets with socket.socket(...)"
        )
    if frame.f_locals.get("fileno") is None:
        return
    caller: types.FrameType | None = frame
    while caller is not None and caller.f_code.co_filename == frame.f_code.co_filename:
        caller = caller.f_back  # out of socket.py (accept() adopts the descriptors it gets)
    if caller is not None and caller.f_code.co_filename in user_files:
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
    allowed = roots["write"] if write else roots["read"]
    if not real or not any(real == root or real.startswith(root + os.sep) for root in allowed):
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
    mine = private_folder() if CONFIG["subinterpreter"] else os.environ.get("TMPDIR")
    writable = (os.path.realpath(mine),) if mine else ()
    roots["read"] = tuple(os.path.realpath(folder) for folder in readable if folder) + writable
    roots["write"] = writable
    sys.addaudithook(audit)
    patch_stdlib()


def real_builtins(names: Any) -> bool:
    """Whether a namespace is a module's (typing passes a class's module globals as locals too)."""
    return isinstance(names, dict) and names.get("__builtins__") in (builtins, vars(builtins))


def patch_stdlib() -> None:
    """Close the stdlib's own routes to `eval`/`exec` of text and to attribute walking by name."""
    import typing  # already loaded (annotations)

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
            # a thread of user code would outlive its run, untimed
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
