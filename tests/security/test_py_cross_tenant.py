"""Cross-tenant: one workspace reaching for another's code, files, globals, `cache` or builtins."""

from collections.abc import Iterator

import pytest

from tests.security.conftest import Arsenal, Tenant

pytestmark = [pytest.mark.kernel]

VICTIM = {
    "remember": "cache['secret'] = 'victim-secret'\n"
    "import tempfile, pathlib\n"
    "path = pathlib.Path(tempfile.gettempdir()) / 'notes.txt'\n"
    "path.write_text('victim-notes')\n"
    "cache['path'] = str(path)\n"
    "return cache['path']",
    "recall": "import json, pathlib\n"
    "return [cache.get('secret'), pathlib.Path(cache['path']).read_text(), json.dumps({'a': [1, 2]}), "
    "'{0}'.format(len.__name__), sorted(functions), str.upper('x')]",
}
EXPECTED = ["victim-secret", "victim-notes", '{"a": [1, 2]}', "len", ["recall", "remember"], "X"]


@pytest.fixture(scope="module")
def victim_file(tenant: Tenant) -> Iterator[str]:
    assert tenant.save("victim", VICTIM, "python").status_code == 200
    answer = tenant.run("victim", "remember")
    assert answer.status_code == 200, answer.text
    yield answer.json()["result"]


# Attacks that succeed on the attacker's own things only (its cache, its globals, its interpreter's modules).
OWN_ONLY: dict[str, object] = {
    "overwrite the cache": {"secret": "attacker"},
    "replace functions": None,  # its own dict of functions, now with a "recall" of its own
    "shadow builtins in its globals": 1,
    "monkey-patch a module's class": 1,
    "open descriptors of the kernel": [],  # every descriptor of the kernel refused
    "glob the storage": [],  # glob swallows the refused listing
}


def attacks(storage: str, victim_file: str) -> dict[str, str]:
    code_file = f"{storage}/victim/main.py"
    return {
        "read the victim's code": f"import pathlib\nreturn pathlib.Path({code_file!r}).read_text()",
        "read the victim's saved body": f"import pathlib\n"
        f"return pathlib.Path({storage!r}, 'victim', 'workspace.yaml').read_text()",
        "overwrite the victim's code": f"import pathlib\npathlib.Path({code_file!r}).write_text('return 0')",
        "list the storage": f"import pathlib\nreturn [str(p) for p in pathlib.Path({storage!r}).iterdir()]",
        "glob the storage": f"import glob\nreturn glob.glob({storage + '/*/*'!r})",
        "read the victim's temp file": f"import pathlib\nreturn pathlib.Path({victim_file!r}).read_text()",
        "overwrite the victim's temp file": f"import pathlib\n"
        f"pathlib.Path({victim_file!r}).write_text('pwned')",
        "delete the victim's temp file": f"import pathlib\npathlib.Path({victim_file!r}).unlink()",
        "list the victim's temp folder": f"import pathlib\n"
        f"return list(pathlib.Path({victim_file!r}).parent.iterdir())",
        "temp file through a link": (
            "import pathlib, tempfile\nlink = pathlib.Path(tempfile.gettempdir()) / 'l'\n"
            f"link.symlink_to({victim_file!r})\nreturn link.read_text()"
        ),
        "temp file through a hard link": (
            "import pathlib, tempfile\nlink = pathlib.Path(tempfile.gettempdir()) / 'h'\n"
            f"link.hardlink_to({victim_file!r})\nreturn link.read_text()"
        ),
        "temp file through dot-dot": (
            "import pathlib, tempfile\n"
            "up = pathlib.Path(tempfile.gettempdir()) / '..'\n"
            f"return (up / {victim_file.split('/')[-2]!r} / 'notes.txt').read_text()"
        ),
        "open descriptors of the kernel": (
            "import io\nfound = []\nfor fd in range(64):\n    try:\n"
            "        found.append(io.open(fd, 'rb', closefd=False).read(64))\n"
            "    except OSError as e:\n        found.append(type(e).__name__)\n"
            "return [f for f in found if f != 'PermissionError']"
        ),
        "descriptors through proc": (
            "import pathlib\nreturn [str(p) for p in pathlib.Path('/proc/self/fd').iterdir()]"
        ),
        "adopt the kernel's sockets": (
            "import http.server\n"
            "s = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)\n"
            "return [str(type(s.socket)(2, 1, 0, fileno=fd)) for fd in range(64)]"
        ),
        "adopt a socket through super": (
            "import http.server\n"
            "s = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)\n"
            "cls = type(s.socket)\n"
            "class S(cls):\n    def __init__(self, fd):\n        super(cls, self).__init__(2, 1, 0, fd)\n"
            "return [str(S(fd)) for fd in range(64)]"
        ),
        "overwrite the cache": "cache['secret'] = 'attacker'\nreturn cache",
        "replace functions": "functions['recall'] = lambda **k: 'pwned'\nreturn sorted(functions)",
        "monkey-patch a module": "import json\njson.dumps = lambda *a, **k: 'pwned'",
        "monkey-patch a module's class": (
            "import json\njson.JSONEncoder.item_separator = '!!'\n"
            "json.encoder.JSONEncoder.encode = None\nreturn 1"
        ),
        "monkey-patch a builtin type": "setattr(str, 'upper', lambda s: 'pwned')",
        "monkey-patch a builtin": "import builtins\nbuiltins.print = None",
        "shadow builtins in its globals": "global print\nprint = None\nreturn 1",
        "builtins through a format": "return '{0.__globals__[__builtins__]}'.format(functions['f'])",
        "other interpreters": "import _xxsubinterpreters as x\nreturn x.list_all()",
        "subclasses of shared types": "return [c.__name__ for c in getattr(object, '__subclasses__')()]",
        "the kernel's modules": "import logging\nreturn list(logging.sys.modules)",
    }


@pytest.fixture(scope="module")
def intruder(tenant: Tenant, victim_file: str) -> Arsenal:
    return Arsenal(tenant, "py-intruder", attacks(str(tenant.storage), victim_file))


@pytest.mark.parametrize("key", attacks("storage", "/tmp/folder/file").keys())
def test_another_workspace_is_out_of_reach(tenant: Tenant, intruder: Arsenal, key: str) -> None:
    answer = intruder.run(key)
    assert "victim-secret" not in answer.text and "victim-notes" not in answer.text, answer.text
    assert "cache['secret']" not in answer.text, answer.text  # the victim's code
    if key in OWN_ONLY:  # what it could touch was its own
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == OWN_ONLY[key] or OWN_ONLY[key] is None, answer.text
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["type"] == "FunctionError"
    recalled = tenant.run("victim", "recall")
    assert recalled.status_code == 200, recalled.text
    assert recalled.json()["result"] == EXPECTED
    tenant.survived("python")
