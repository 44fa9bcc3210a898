"""The egress wall in the `dedicated` tier and behind `functions python-api`, at default settings.

Only loopback is attacked here (safe from the root network namespace): a bystander listener and the
serving process's own port. tests/security/test_egress.py attacks the other ranges inside namespaces.
"""

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import serving
from tests.python.kernels import kernel
from tests.remote import python_api_process

pytestmark = [pytest.mark.node, kernel]
REFUSAL = ("egress policy", "FUNCTIONS_EGRESS")
JS = """
const target = `http://127.0.0.1:${port}/`;
try { await fetch(target); return 'reached'; } catch (err) { return `${err.message}: ${err.cause?.message}`; }
"""
PY = """
import urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    return "reached"
except Exception as exc:
    return str(exc)
"""


class Bystander:
    """A loopback listener that counts the connections it accepts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture
def bystander() -> Iterator[Bystander]:
    listener = Bystander()
    try:
        yield listener
    finally:
        listener.close()


def attack(url: str, language: str, port: int) -> str:
    code = JS if language == "nodejs" else PY
    body = {
        "functions": {"f": {"code": code, "language": language, "parameters": {"port": {"type": "integer"}}}}
    }
    with httpx.Client(base_url=url, timeout=30.0) as client:
        assert client.post("/v2/functions/attacker", json=body).status_code == 200
        answer = client.post("/v2/functions/attacker/run/f", json={"parameters": {"port": port}})
        assert answer.status_code == 200, answer.text
        result: str = answer.json()["result"]
        walls = client.get("/sys/healthcheck").json()
    return result + "\n" + str(walls)


def test_the_dedicated_tier_refuses_loopback_in_both_languages(tmp_path: Path, bystander: Bystander) -> None:
    with serving(tmp_path, FUNCTIONS_ISOLATION="dedicated", KERNEL_POOL_SIZE="2") as url:
        api_port = int(url.rsplit(":", 1)[1])
        for language in ("nodejs", "python"):
            for port in (bystander.port, api_port):
                result = attack(url, language, port)
                assert "reached" not in result.splitlines()[0]
                assert all(word in result for word in REFUSAL), result
            assert "'egress': {'on': True" in result
    assert bystander.connections == 0


def test_the_python_api_refuses_loopback(tmp_path: Path, bystander: Bystander) -> None:
    with python_api_process(environ={"KERNEL_POOL_SIZE": "1"}) as python_api:
        with serving(tmp_path, PYTHON_API_URL=python_api) as url:
            api_port = int(python_api.rsplit(":", 1)[1])
            for port in (bystander.port, api_port):
                result = attack(url, "python", port)
                assert "reached" not in result.splitlines()[0]
                assert all(word in result for word in REFUSAL), result
        health = httpx.get(f"{python_api}/sys/healthcheck").json()
        assert health["walls"]["hosts"]["python"]["egress"]["on"] is True
    assert bystander.connections == 0
