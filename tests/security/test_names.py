"""Odd workspace and function names through HTTP, in both languages: each is either a clear 400 or works
correctly (saved, read back, run, deleted), never a 500, and nothing is written outside the storage folder.
"""

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.security.conftest import API_KEY, Tenant

pytestmark = [pytest.mark.node, pytest.mark.kernel]

WORKSPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LANGUAGES = ["nodejs", "python"]

# As they appear in the request path, sent byte for byte (no client-side normalization).
WORKSPACES_THAT_WORK = [
    "a..b",
    "a.",
    "A-_.9",
    "a" * 128,
    "constructor",
    "prototype",
    "node_modules",
    "index.js",
]
WORKSPACES_REFUSED = [
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%252e%252e",
    "a%5cb",
    "a%00b",
    "a%0ab",
    "_a",
    "-a",
    ".hidden",
    "a%20b",
    "%C3%A4",
    "a" * 129,
    "~root",
    "__proto__",
]
# Literal dot segments: the route does not match, or the name is refused; never a path on disk.
WORKSPACES_NOT_ROUTED = ["..", ".", "../escaped", "a/../../escaped", "..%2F..%2Fescaped", "a%2fb"]

FUNCTIONS_THAT_WORK = [
    "__proto__",
    "constructor",
    "toString",
    "hasOwnProperty",
    "valueOf",
    "then",
    "$",
    "_",
    "a.b",
    "a-b",
    "$$.-",
    "Object",
    "eval",
    "arguments",
    "require",
    "cache",
    "functions",
    "parameters",
    "print",
    "__init__",
    "__class__",
    "__builtins__",
    "None",
    "return",
    "class",
    "f" * 128,
]
FUNCTIONS_REFUSED = ["..", ".a", "a/b", "a b", "1a", "", "f" * 129, "-a", "a\u0000", "\u00e4", "a\nb"]


def raw(tenant: Tenant, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request with `path` exactly as given: http.client does not resolve dot segments."""
    address = urlsplit(tenant.url)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
        connection.request(method, path, body=data, headers=headers)
        answer = connection.getresponse()
        text = answer.read().decode()
        return answer.status, json.loads(text) if text else None
    finally:
        connection.close()


def code_returning(name: str) -> str:
    return f"return {json.dumps(name)}"  # the same text is a body in both languages


@pytest.fixture
def untouched_outside(tenant: Tenant) -> Iterator[None]:
    """Nothing appears next to the storage folder, and every folder in it has a valid workspace id."""
    outside = tenant.storage.parent
    before = sorted(path.name for path in outside.iterdir())
    yield
    assert sorted(path.name for path in outside.iterdir()) == before
    for path in tenant.storage.iterdir():
        assert path.name.startswith(".") or WORKSPACE_ID.fullmatch(path.name), path
    assert not (tenant.storage.parent / "escaped").exists()


@pytest.mark.usefixtures("untouched_outside")
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", WORKSPACES_THAT_WORK)
def test_an_odd_but_valid_workspace_id_works_end_to_end(tenant: Tenant, name: str, language: str) -> None:
    body = {"functions": {"f": {"language": language, "code": code_returning(name)}}}
    assert raw(tenant, "POST", f"/v2/functions/{name}", body) == (200, body)
    assert raw(tenant, "GET", f"/v2/functions/{name}") == (200, body)
    assert (tenant.storage / name / "workspace.yaml").is_file()
    status, answer = raw(tenant, "POST", f"/v2/functions/{name}/run/f", {})
    assert (status, answer["result"]) == (200, name)
    assert raw(tenant, "DELETE", f"/v2/functions/{name}")[0] == 204
    assert not (tenant.storage / name).exists()
    tenant.survived(language)


@pytest.mark.usefixtures("untouched_outside")
@pytest.mark.parametrize("name", WORKSPACES_REFUSED)
def test_an_invalid_workspace_id_is_a_clear_400(tenant: Tenant, name: str) -> None:
    body = {"functions": {"f": {"code": "return 1"}}}
    for method, path, sent in [
        ("POST", f"/v2/functions/{name}", body),
        ("GET", f"/v2/functions/{name}", None),
        ("POST", f"/v2/functions/{name}/run/f", {}),
        ("DELETE", f"/v2/functions/{name}", None),
    ]:
        status, answer = raw(tenant, method, path, sent)
        assert status == 400, (method, path, answer)
        assert answer["error"]["type"] == "InvalidRequest"
    assert not (tenant.storage / unquote(unquote(name))).exists() or unquote(unquote(name)) in ("..", ".")
    tenant.survived()


@pytest.mark.usefixtures("untouched_outside")
@pytest.mark.parametrize("path", WORKSPACES_NOT_ROUTED)
def test_dot_segments_in_the_path_never_reach_the_disk(tenant: Tenant, path: str) -> None:
    body = {"functions": {"f": {"code": "return 1"}}}
    for method, sent in [("POST", body), ("GET", None), ("DELETE", None)]:
        status, answer = raw(tenant, method, f"/v2/functions/{path}", sent)
        assert status in (400, 404, 405), (method, path, status, answer)
        assert isinstance(answer, dict) and "error" in answer
    status, _ = raw(tenant, "POST", f"/v2/functions/{path}/run/f", {})
    assert status in (400, 404, 405)
    tenant.survived()


@pytest.mark.usefixtures("untouched_outside")
@pytest.mark.parametrize("language", LANGUAGES)
def test_odd_function_names_each_run_their_own_code(tenant: Tenant, language: str) -> None:
    workspace = f"odd-functions-{language}"
    functions = {name: {"language": language, "code": code_returning(name)} for name in FUNCTIONS_THAT_WORK}
    status, answer = raw(tenant, "POST", f"/v2/functions/{workspace}", {"functions": functions})
    assert status == 200, answer
    for name in FUNCTIONS_THAT_WORK:
        answer = tenant.run(workspace, name)
        assert answer.status_code == 200, (name, answer.text)
        assert answer.json()["result"] == name
    tenant.survived(language)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    "name", ["toString", "constructor", "__proto__", "hasOwnProperty", "__class__", "then"]
)
def test_a_name_the_workspace_lacks_is_not_found(tenant: Tenant, name: str, language: str) -> None:
    workspace = f"one-function-{language}"
    assert tenant.save(workspace, {"f": "return 1"}, language).status_code == 200
    answer = tenant.run(workspace, name)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["type"] == "NotFound"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", FUNCTIONS_REFUSED)
def test_an_invalid_function_name_is_a_clear_400(tenant: Tenant, name: str, language: str) -> None:
    saved = tenant.save("bad-function-name", {name: "return 1"}, language)
    assert saved.status_code == 400, saved.text
    assert saved.json()["error"]["type"] == "InvalidRequest"
    assert not (tenant.storage / "bad-function-name").exists()


def test_a_very_long_path_is_refused_cleanly(tenant: Tenant) -> None:
    status, answer = raw(tenant, "POST", "/v2/functions/" + "a" * 5000 + "/run/" + "f" * 5000, {})
    assert status in (400, 404, 414), answer
    tenant.survived()
