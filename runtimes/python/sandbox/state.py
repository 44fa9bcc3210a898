"""What the sandbox's modules share: the configuration, and where a run is (context variables)."""

import contextvars
from typing import Any

CONFIG: dict[str, Any] = {
    "builtins": [],
    "packages": [],
    "refusedModules": ["logging.config"],  # dictConfig imports any callable named in its dict
    "maxEntries": 1000,
    "maxBytes": 1 << 20,
    "maxResultBytes": 10 << 20,
    "maxErrorChars": 64 << 10,
    # Set by the kernel: a workspace's subinterpreter (contained throughout), or a kernel's own main
    # interpreter (contained only while user code runs, since the kernel shares it).
    "subinterpreter": False,
}
# The builtins of user code (filled by entry.configure): typing evaluates annotation text with them.
BUILTINS: dict[str, Any] = {}
# The current run's log capture (output.Capture), None outside runs.
capture: contextvars.ContextVar[Any] = contextvars.ContextVar("capture", default=None)
# Whether user code (or code it called) is running: what the audit hook checks for imports and pickles.
in_user_code: contextvars.ContextVar[bool] = contextvars.ContextVar("user", default=False)
user_files: set[str] = set()  # the file names of user code: its functions' names
roots: dict[str, tuple[str, ...]] = {"read": (), "write": ()}  # where files may be read, and written


def contained() -> bool:
    """Whether the audit hook refuses now: a workspace's subinterpreter throughout (also code run at its
    close, `__del__`, atexit); a dedicated kernel's main interpreter only while user code runs."""
    return bool(CONFIG["subinterpreter"]) or in_user_code.get()
