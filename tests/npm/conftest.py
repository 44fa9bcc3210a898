"""The `registry` marker of the one test that needs the real npm registry (`-m 'not registry'` offline)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "registry: talks to the real npm registry (deselect offline: -m 'not registry')"
    )
