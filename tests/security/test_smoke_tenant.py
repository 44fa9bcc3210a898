"""The hostile suite's own fixture works: a save, a run, and the survival check."""

import pytest

from tests.security.conftest import Tenant

pytestmark = [pytest.mark.node, pytest.mark.kernel]


def test_a_tenant_runs_code_in_both_languages(tenant: Tenant) -> None:
    assert tenant.attack("return 1 + 1").json()["result"] == 2
    assert tenant.attack("return 1 + 1", language="python", workspace="py").json()["result"] == 2
    tenant.survived()
    tenant.survived("python")
