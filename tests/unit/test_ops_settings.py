"""The settings of the operations work: metric labels and the shutdown grace period."""

import pytest

from entrypoints.settings import SettingsError, load_settings


def test_workspace_labels_are_on_and_the_grace_period_is_25_seconds_by_default() -> None:
    settings = load_settings({})
    assert settings.metrics_workspace_labels is True and settings.shutdown_grace_s == 25


def test_workspace_labels_can_be_turned_off_and_the_grace_period_set() -> None:
    settings = load_settings({"METRICS_WORKSPACE_LABELS": "no", "SHUTDOWN_GRACE_PERIOD": "0"})
    assert settings.metrics_workspace_labels is False and settings.shutdown_grace_s == 0


@pytest.mark.parametrize(
    ("name", "raw"), [("SHUTDOWN_GRACE_PERIOD", "-1"), ("METRICS_WORKSPACE_LABELS", "maybe")]
)
def test_a_bad_value_names_its_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}="):
        load_settings({name: raw})
