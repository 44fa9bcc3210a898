"""The NDJSON host wrapper: a host that cannot serve one request says so, and that request is Unavailable."""

import sys

import pytest

from adapters.hosts.process import HostProcess
from adapters.hosts.protocol import Compile
from domain.errors import Unavailable

# A host that answers `ready`, then refuses every request with an `unavailable` reply and keeps going.
REFUSING_HOST = """
import json, sys
print(json.dumps({"type": "ready", "protocol": 1}), flush=True)
for line in sys.stdin:
    message = json.loads(line)
    reply = {"type": "unavailable", "id": message["id"], "message": "out of memory for " + message["type"]}
    print(json.dumps(reply), flush=True)
"""


@pytest.mark.anyio
async def test_an_unavailable_reply_fails_that_request_and_the_host_keeps_serving() -> None:
    host = HostProcess([sys.executable, "-c", REFUSING_HOST], name="test")
    await host.start()
    try:
        for _ in range(2):
            with pytest.raises(Unavailable, match="out of memory for compile"):
                await host.request(Compile([]).wire, timeout_s=5.0)
        assert host.alive
    finally:
        await host.close()
