"""Fuzzing the HTTP API from its own /openapi.json: no answer outside what it declares, never a 500."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from entrypoints.http.openapi import document
from tests.faults.service import Service

pytestmark = [pytest.mark.node, pytest.mark.kernel]  # a real service, both real runtimes


@schemathesis.check
def no_internal_error(
    ctx: schemathesis.CheckContext,
    response: schemathesis.Response,
    case: schemathesis.Case[Any],
) -> None:
    """Never a 500; a 503 or a 504 is an answer the API declares (a runtime down, a run's timeout)."""
    assert response.status_code != 500, f"500 InternalError: {response.text[:500]}"
    if response.status_code >= 500:
        assert response.json()["error"]["type"] in ("Unavailable", "TimeoutError"), response.text[:500]


CHECKS = [
    no_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    storage: Path = tmp_path_factory.mktemp("fuzzed")
    service = Service(
        storage,
        NODEJS_PACKAGES_WHITELIST_IMPORT="nothing-installable",
        FUNCTIONS_RUN_TIMEOUT="1000",
        PYTHON_FUNCTIONS_RUN_TIMEOUT="1000",
    )
    try:
        service.wait_ready()
        yield service.url
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log_text()


# The smallest names Hypothesis draws, so generated runs reach real functions in both runtimes.
SEEDS = {
    "0": {"functions": {name: {"code": "return parameters;"} for name in ("A", "_", "$", "a")}},
    "A": {
        "functions": {name: {"code": "return parameters", "language": "python"} for name in ("A", "_", "a")}
    },
}


@pytest.fixture
def seeded(service_url: str) -> str:
    """The seeded workspaces, saved again before each operation's examples (fuzzed saves replace them)."""
    for workspace, body in SEEDS.items():
        httpx.post(f"{service_url}/v2/functions/{workspace}", json=body).raise_for_status()
    return service_url


schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_declared_and_none_is_a_500(case: schemathesis.Case[Any], seeded: str) -> None:
    case.call_and_validate(base_url=seeded, checks=CHECKS, timeout=30)
