"""The least-recently-used choice both runtimes make."""

from attrs import define

from adapters.hosts.residency import least_recently_used


@define
class Entry:
    in_flight: int = 0


def test_the_oldest_go_first_down_to_the_limit() -> None:
    resident = {"a": Entry(), "b": Entry(), "c": Entry(), "d": Entry()}
    assert least_recently_used(resident, limit=2, keep="d") == ["a", "b"]


def test_the_kept_one_and_busy_ones_stay_even_over_the_limit() -> None:
    resident = {"a": Entry(in_flight=1), "b": Entry(), "c": Entry()}
    assert least_recently_used(resident, limit=1, keep="b") == ["c"]
    assert least_recently_used(resident, limit=3, keep="c") == []
