"""What the kernel calls in an interpreter: ENTRY[op](json text) -> json text."""

import json
import sys

from .checks import check
from .containment import install_containment
from .output import configure_output
from .state import BUILTINS, CONFIG
from .workspace import Workspace, restricted_builtins

_workspace: Workspace | None = None


def op_configure(text: str) -> str:
    """Before any user code: the settings, then the builtins of user code, then the audit hook. Once: a
    dedicated kernel configures its interpreter for each version of its workspace, and an audit hook
    cannot be taken back (nor should the stdlib's patches wrap themselves)."""
    if BUILTINS:
        return "{}"
    CONFIG.update(json.loads(text))
    sys.path[:0] = [folder for folder in CONFIG.get("path", []) if folder not in sys.path]
    configure_output()
    BUILTINS.update(restricted_builtins())
    install_containment()
    return "{}"


def op_load(text: str) -> str:
    """A version of the workspace; the one it replaces in this interpreter (a save) is dropped first, so
    its `cache` and globals go as they would with the interpreter."""
    global _workspace
    previous, _workspace = _workspace, None
    if previous is not None:
        previous.drop()
    _workspace = Workspace(json.loads(text))
    return "{}"


def op_run(text: str) -> str:
    """`text` is the kernel's `run` message as it came: its `fn` and `params` are what this needs."""
    assert _workspace is not None, "run before load"
    return _workspace.run(json.loads(text))


def op_drop(text: str) -> str:
    """The workspace's state goes (evicted); the interpreter stays for its next version."""
    global _workspace
    workspace, _workspace = _workspace, None
    if workspace is not None:
        workspace.drop()
    return "{}"


def op_check(text: str) -> str:
    return json.dumps(check(json.loads(text)))


def op_release(text: str) -> str:
    """Before the kernel closes this interpreter: drop the workspace, and let the close come from any thread.

    Closing an interpreter calls `threading._shutdown` if `threading` is in its sys.modules. On 3.12 that
    waits for the lock of the thread that first imported `threading` here, released only when that
    thread's state goes; kernel calls reuse the interpreter's first thread state, so the close would wait
    forever unless it happens on that very OS thread. Nothing here is worth waiting for (user code cannot
    start threads, the kernel's own have left), so `threading` leaves sys.modules and the close skips it.
    """
    global _workspace
    workspace, _workspace = _workspace, None
    if workspace is not None:
        workspace.drop()
    if CONFIG["subinterpreter"]:
        sys.modules.pop("threading", None)
    return "{}"


ENTRY = {
    "configure": op_configure,
    "load": op_load,
    "run": op_run,
    "drop": op_drop,
    "check": op_check,
    "release": op_release,
}
