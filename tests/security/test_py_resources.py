"""Resource abuse: loops, memory, results, recursion, logs, exits, forks and threads end that run only."""

import time

import pytest

from tests.security.conftest import TIMEOUT_MS, Arsenal, Tenant, function_error

pytestmark = [pytest.mark.kernel]

# (code, status, error type, error name or None): each ends with an error of its own, the kernel lives on.
ABUSES = {
    "string bomb": ("return 'x' * (10 ** 10)", 422, "ResourceLimitError", "MemoryError"),
    "list bomb": ("return [0] * (10 ** 10)", 422, "ResourceLimitError", "MemoryError"),
    "bytearray bomb": ("return len(bytearray(10 ** 10))", 422, "ResourceLimitError", "MemoryError"),
    "growing list": (
        "chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))",
        422,
        "ResourceLimitError",
        "MemoryError",
    ),
    "giant result": ("return 'x' * (11 << 20)", 422, "ResourceLimitError", "ResultTooLarge"),
    "many small results": ("return ['x' * 1000] * 12_000", 422, "ResourceLimitError", "ResultTooLarge"),
    "deep recursion": ("def r(n):\n    return r(n + 1)\nreturn r(0)", 422, "FunctionError", "RecursionError"),
    "recursion through a dunder": (
        "class A:\n    def __repr__(self):\n        return repr(self)\nreturn repr(A())",
        422,
        "FunctionError",
        "RecursionError",
    ),
    "deeply nested result": (
        "x = []\nfor _ in range(200_000):\n    x = [x]\nreturn x",
        422,
        "ResultNotSerializable",
        None,
    ),
    "deeply nested repr": (
        "x = []\nfor _ in range(200_000):\n    x = [x]\nreturn str(x)",
        422,
        "FunctionError",
        "RecursionError",
    ),
    "sys.exit": ("raise SystemExit(0)", 422, "FunctionError", "SystemExit"),
    "exit builtin": ("exit(0)", 422, "FunctionError", "NameError"),
    "quit builtin": ("quit()", 422, "FunctionError", "NameError"),
    "os._exit": ("__import__('os')._exit(0)", 422, "FunctionError", "ImportError"),
    "os._exit through a view": (
        "import tempfile\ntempfile._os._exit(0)",
        422,
        "FunctionError",
        "AttributeError",
    ),
    "keyboard interrupt": ("raise KeyboardInterrupt", 422, "FunctionError", "KeyboardInterrupt"),
    "generator exit": ("raise GeneratorExit", 422, "FunctionError", "GeneratorExit"),
    "fork": ("__import__('os').fork()", 422, "FunctionError", "ImportError"),
    "subprocess": ("import subprocess\nsubprocess.run(['id'])", 422, "FunctionError", "ImportError"),
    "thread bomb": (
        "import logging.handlers, queue\nfor _ in range(10000):\n"
        "    logging.handlers.QueueListener(queue.Queue()).start()",
        422,
        "FunctionError",
        "RuntimeError",
    ),
    "threading server": (
        "import http.server\n"
        "s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)\n"
        "s.process_request(None, None)",
        422,
        "FunctionError",
        "RuntimeError",
    ),
    "a huge error message": ("raise ValueError('x' * (50 << 20))", 422, "FunctionError", "ValueError"),
}


@pytest.fixture(scope="module")
def arsenal(tenant: Tenant) -> Arsenal:
    return Arsenal(tenant, "py-resources", {key: code for key, (code, *_rest) in ABUSES.items()})


@pytest.mark.parametrize("key", ABUSES.keys())
def test_abuse_ends_that_run_with_an_error(tenant: Tenant, arsenal: Arsenal, key: str) -> None:
    _code, status, kind, name = ABUSES[key]
    answer = arsenal.run(key)
    assert answer.status_code == status, answer.text[:500]
    error = answer.json()["error"]
    assert error["type"] == kind, error
    if name is not None:
        assert error["name"] == name, error
    assert len(answer.content) < 1 << 20  # an error carries no more than its class and a bounded message
    tenant.survived("python")


def test_log_floods_are_cut_and_say_so(tenant: Tenant) -> None:
    code = (
        "import logging\nfor i in range(20_000):\n    print(i)\n    logging.warning('w' * 100)\n"
        "print('x' * (3 << 20))\nreturn 'done'"
    )
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 200, answer.text[:500]
    logs = answer.json()["logs"]
    assert len(logs) == 1000
    assert "were dropped" in logs[-1]["message"]
    assert answer.json()["result"] == "done"
    tenant.survived("python")


ENDLESS = {
    "busy loop": "while True:\n    pass",
    # C code that never returns to the interpreter's loop: only the kernel's replacement ends it
    "catastrophic regex": "import re\nreturn bool(re.match(r'(a+)+$', 'a' * 64 + 'b'))",
    "huge power": "return len(str(7 ** (7 ** 12)))",
}


@pytest.mark.parametrize("code", ENDLESS.values(), ids=ENDLESS.keys())
def test_what_never_ends_times_out_and_others_are_served(tenant: Tenant, code: str) -> None:
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["type"] == "TimeoutError"
    tenant.survived("python")


def test_a_loop_hidden_in_the_results_encoding_times_out_too(tenant: Tenant) -> None:
    code = "class Forever:\n    def tolist(self):\n        while True:\n            pass\nreturn Forever()"
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 504, answer.text
    tenant.survived("python")


def test_an_async_function_that_never_ends_times_out(tenant: Tenant) -> None:
    code = "async def spin():\n    while True:\n        pass\nawait spin()"
    function_error_or_timeout = tenant.attack(code, language="python")
    assert function_error_or_timeout.status_code == 504, function_error_or_timeout.text
    tenant.survived("python")


def test_exceptions_raised_while_reporting_an_error_are_contained(tenant: Tenant) -> None:
    code = "class Bad(Exception):\n    def __str__(self):\n        raise RuntimeError('no text')\nraise Bad()"
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 422, answer.text
    function_error(answer, answer.json()["error"]["name"])
    tenant.survived("python")


def test_exit_hooks_are_refused_and_a_finalizer_loop_ends_with_its_kernel(tenant: Tenant) -> None:
    """atexit callbacks are refused and weakref finalizers cannot ask to run at exit. A finalizer still
    runs when its object goes, at the latest when the interpreter is dropped: a loop there is ended
    with its kernel at the close deadline."""
    code = "import atexit\natexit.register(lambda: [0 for _ in iter(int, 1)])"
    function_error(tenant.attack(code, language="python"), "RuntimeError", "atexit")
    code = (
        "import weakref\nclass A:\n    pass\ncache['a'] = a = A()\n"
        "f = weakref.finalize(a, lambda: [0 for _ in iter(int, 1)])\nf.atexit = True\n"
        "gone = []\nweakref.finalize(A(), gone.append, 'collected')\n"  # finalizers still work in a run
        "return [f.atexit, f.alive, gone]"
    )
    answer = tenant.attack(code, language="python", workspace="py-closer")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == [False, True, ["collected"]]
    # Dropping the interpreter runs the finalizer's loop (as its object goes): the kernel is replaced at
    # the close deadline (the run timeout), and the workspace then answers from a fresh one.
    saved = tenant.save("py-closer", {"f": "return 'reloaded'"}, "python")
    assert saved.status_code == 200, saved.text
    time.sleep(TIMEOUT_MS / 1000 + 1.0)
    again = tenant.run("py-closer", "f")
    assert (again.status_code, again.json()["result"]) == (200, "reloaded"), again.text
    tenant.survived("python")


def test_a_loop_left_in_cache_for_the_interpreters_close_is_contained(tenant: Tenant) -> None:
    """A suspended generator in `cache` runs its `finally` when a save closes its interpreter: the kernel
    is replaced at the close deadline (the run timeout), after which every workspace answers again.
    Until then the loop runs contained, as a run does, under its own interpreter's GIL (with only 3.11,
    in a kernel of its own), and warm runs elsewhere go on."""
    tenant.survived("python")  # the bystander is warm before the attack
    armed = (
        "def armed():\n    try:\n        yield 1\n    finally:\n        while True:\n            pass\n"
        "cache['armed'] = armed()\nnext(cache['armed'])\nreturn 'armed'"
    )
    answer = tenant.attack(armed, language="python", workspace="py-armed")
    assert (answer.status_code, answer.json()["result"]) == (200, "armed"), answer.text
    saved = tenant.save("py-armed", {"f": "return 'dropped'"}, "python")  # the loop starts
    assert saved.status_code == 200, saved.text
    tenant.survived("python")  # while it loops
    time.sleep(TIMEOUT_MS / 1000 + 1.0)
    answer = tenant.run("py-armed", "f")
    assert (answer.status_code, answer.json()["result"]) == (200, "dropped"), answer.text
    tenant.survived("python")
