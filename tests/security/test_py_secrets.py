"""Secrets planted in the service's environment: every route a Python function could take to read them."""

import pytest

from tests.security.conftest import API_KEY, CANARY, Arsenal, Tenant

pytestmark = [pytest.mark.kernel]

# Each attack returns what it found (or raises). Whatever the answer, no secret is in it.
ATTACKS = {
    "os.environ": "return dict(__import__('os').environ)",
    "tempfile._os.environ": "import tempfile\nreturn dict(tempfile._os.environ)",
    "getattr route": "import tempfile\nreturn dict(getattr(tempfile, '_os').environ)",
    "format route": "return '{0.__globals__[os].environ}'.format(functions['f'])",
    "format through a view": "import json\n"
    "return '{0.__init__.__globals__[sys].modules[os].environ}'.format(json)",
    "own environ file": "import pathlib\nreturn pathlib.Path('/proc/self/environ').read_text()",
    "parent environ file": (
        "import pathlib\n"
        "status = pathlib.Path('/proc/self/status').read_text()\n"
        "ppid = [l.split()[1] for l in status.splitlines() if l.startswith('PPid')][0]\n"
        "return pathlib.Path(f'/proc/{ppid}/environ').read_text()"
    ),
    "every process": (
        "import pathlib\n"
        "pids = [p for p in pathlib.Path('/proc').iterdir() if p.name.isdigit()]\n"
        "return [p.joinpath('environ').read_text() for p in pids]"
    ),
    "glob of every process": (
        "import glob, io\nreturn [io.open(p).read() for p in glob.glob('/proc/*/environ')]"
    ),
    "guessed pids": (
        "import pathlib\nfound = []\nfor pid in range(1, 400000, 997):\n"
        "    try:\n        found.append(pathlib.Path(f'/proc/{pid}/environ').read_bytes())\n"
        "    except OSError:\n        pass\nreturn [f.decode() for f in found]"
    ),
    "self via a thread path": "import pathlib\nreturn pathlib.Path('/proc/thread-self/environ').read_text()",
    "cmdline of the parent": "import pathlib\nreturn pathlib.Path('/proc/self/../1/cmdline').read_text()",
    "memory of the process": "import pathlib\nreturn pathlib.Path('/proc/self/mem').read_bytes()[:10]",
    "urlopen file url": "import urllib.request\nreturn urllib.request.urlopen('file:///proc/self/environ').read()",
    "zipfile": "import zipfile\nreturn zipfile.ZipFile('/proc/self/environ').namelist()",
    "tarfile": "import tarfile\nreturn tarfile.open('/proc/self/environ').getnames()",
    "gzip": "import gzip\nreturn gzip.open('/proc/self/environ').read()",
    "io.FileIO": "import io\nreturn io.FileIO('/proc/self/environ').read().decode()",
    "csv over io.open": "import csv, io\nreturn list(csv.reader(io.open('/proc/self/environ')))",
    "email from a file": "import email, io\n"
    "return str(email.message_from_file(io.open('/proc/self/environ')))",
    "traceback line cache": (
        "import traceback\nreturn traceback.FrameSummary('/proc/self/environ', 1, 'x').line"
    ),
    "cookie jar": (
        "import http.cookiejar\njar = http.cookiejar.MozillaCookieJar('/proc/self/environ')\njar.load()\n"
        "return str(jar)"
    ),
    "proxies from the environment": "import urllib.request\nreturn urllib.request.getproxies()",
    "home from the environment": "import pathlib\nreturn str(pathlib.Path('~').expanduser())",
    "string template": "import string\nreturn string.Template('$SECRET_CANARY').safe_substitute()",
    "logging file handler": (
        "import logging\nh = logging.FileHandler('/proc/self/environ', mode='r')\nreturn h.stream.read()"
    ),
    "service storage": ("import pathlib\nreturn [str(p) for p in pathlib.Path('/proc/self/cwd').iterdir()]"),
    "service settings via get_type_hints": (
        "import typing\nclass C:\n    __module__ = 'logging'\n    x: 'sys.modules[\"os\"].environ'\n"
        "return str(typing.get_type_hints(C))"
    ),
    "protocol input": "import io\nreturn io.open(0, 'rb').read(100)",
}


@pytest.fixture(scope="module")
def arsenal(tenant: Tenant) -> Arsenal:
    return Arsenal(tenant, "py-secrets", ATTACKS)


@pytest.mark.parametrize("key", ATTACKS.keys())
def test_no_route_reads_the_services_secrets(tenant: Tenant, arsenal: Arsenal, key: str) -> None:
    answer = arsenal.run(key)
    assert CANARY not in answer.text
    assert API_KEY not in answer.text
    if answer.status_code == 200:  # only what the scrubbed kernel environment holds
        for name in ("SECRET_CANARY", "FUNCTIONS_API_KEY", "NPM_CONFIG__AUTH"):
            assert f"{name}=" not in answer.text and f"'{name}'" not in answer.text
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["name"] in {
            "PermissionError",
            "AttributeError",
            "ImportError",
            "NameError",
            "URLError",
            "FileNotFoundError",
        }, answer.text
    tenant.survived("python")


def test_reading_files_is_refused_by_name(tenant: Tenant) -> None:
    """The containment is the refusal itself, not an empty file: the message names the path."""
    code = "import pathlib\nreturn pathlib.Path('/proc/self/environ').read_text()"
    answer = tenant.attack(code, language="python")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"] == "open of '/proc/self/environ' is not allowed in functions"
    tenant.survived("python")
