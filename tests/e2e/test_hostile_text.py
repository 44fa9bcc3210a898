"""Text that JavaScript can make and UTF-8 cannot carry still comes back as JSON, never as a 500."""

from pathlib import Path

import httpx
import pytest

from tests.e2e.serving import serving

pytestmark = pytest.mark.node


def test_lone_surrogates_in_results_logs_and_errors_come_back_escaped(tmp_path: Path) -> None:
    functions = {
        "result": {"code": "return '\\ud800x';"},
        "logs": {"code": "console.log('\\udfff'); return 1;"},
        "error": {"code": "console.log('\\ud800'); throw new Error('bad \\udc00');"},
    }
    with serving(tmp_path) as url, httpx.Client(base_url=url) as client:
        assert client.post("/v2/functions/s", json={"functions": functions}).status_code == 200
        result, logs, error = (client.post(f"/v2/functions/s/run/{name}", json={}) for name in functions)
        assert result.status_code == 200 and b'"\\ud800x"' in result.content
        assert logs.status_code == 200 and b'"\\udfff"' in logs.content
        assert error.status_code == 422 and b"bad \\udc00" in error.content
        assert error.json()["error"]["type"] == "FunctionError"
