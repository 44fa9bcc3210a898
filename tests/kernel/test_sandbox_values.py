"""The sandbox's attribute guards, results and log capture, in this process (no kernel)."""

import datetime
import decimal
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel import sandbox_modules  # noqa: F401  # puts the sandbox on sys.path

from sandbox import attributes, output, results  # isort: skip
from sandbox.state import CONFIG  # isort: skip
from sandbox.state import capture as current_capture  # isort: skip


@pytest.fixture
def config() -> Iterator[dict[str, Any]]:
    saved = dict(CONFIG)
    yield CONFIG
    CONFIG.clear()
    CONFIG.update(saved)


@pytest.mark.parametrize("name", ["__class__", "__globals__", "f_back", "gi_frame", "mro"])
def test_getattr_by_name_refuses_the_internals(name: str) -> None:
    with pytest.raises(AttributeError, match="not allowed in functions"):
        attributes.safe_getattr(object(), name)


def test_format_strings_may_not_walk_to_the_internals() -> None:
    with pytest.raises(AttributeError, match="__class__"):
        attributes.safe_getattr("{0.__class__}", "format")
    assert attributes.safe_getattr("{0.real:{1}}", "format")(3, "d") == "3"
    with pytest.raises(AttributeError):
        attributes.guarded_format(str.format)("{0.__init__.__globals__}", 1)


def test_attrgetter_of_format_is_refused() -> None:
    with pytest.raises(AttributeError):
        attributes.safe_attrgetter("a.format")
    assert attributes.safe_attrgetter("real")(2) == 2


def test_values_json_cannot_hold_become_json() -> None:
    value = {
        "set": {1},
        "day": datetime.date(2024, 1, 2),
        "whole": decimal.Decimal("3"),
        "part": decimal.Decimal("0.5"),
        "bytes": b"\x00\x01",
    }
    text = results.finish({"status": "succeeded", "result": value})
    assert json.loads(text)["result"] == {
        "set": [1],
        "day": "2024-01-02",
        "whole": 3,
        "part": 0.5,
        "bytes": "AAE=",
    }


def test_a_result_json_cannot_hold_changes_the_status() -> None:
    reply = json.loads(results.finish({"status": "succeeded", "result": object()}))
    assert reply["status"] == "not_serializable" and reply["error"]["name"] == "ResultNotSerializable"
    assert json.loads(results.finish({"status": "succeeded", "result": float("nan")}))["status"] == (
        "not_serializable"
    )


def test_too_large_a_result_is_a_resource_limit(config: dict[str, Any]) -> None:
    config["maxResultBytes"] = 100
    reply = json.loads(results.finish({"status": "succeeded", "result": "x" * 200}))
    assert reply["status"] == "resource_limit" and reply["error"]["name"] == "ResultTooLarge"


def test_a_lone_surrogate_becomes_a_question_mark() -> None:
    assert json.loads(results.finish({"status": "succeeded", "result": "a\ud800"}))["result"] == "a?"


def test_stacks_show_only_the_users_frames(config: dict[str, Any]) -> None:
    def inner() -> None:
        raise ValueError("boom")

    try:
        inner()
    except ValueError as exc:
        error = results.error_of(exc, names={"fn"})
    assert error["name"] == "ValueError" and error["message"] == "boom"
    assert __file__ not in error["stack"] and error["stack"].endswith("ValueError: boom")
    config["maxErrorChars"] = 10
    assert results.clip("y" * 25) == "yyyyyyyyyy... (15 more characters)"


def test_printed_pieces_make_one_entry_per_line() -> None:
    capture = output.Capture()
    token = current_capture.set(capture)
    try:
        for i in range(3):
            output.user_print(i, end=",")
        output.user_print()
        output.user_print("two", "words", sep="-")
        with pytest.raises(TypeError):
            output.user_print("x", sep=1)  # type: ignore[arg-type]
    finally:
        current_capture.reset(token)
    assert [(e["level"], e["message"]) for e in capture.finish()] == [("log", "0,1,2,"), ("log", "two-words")]


def test_logs_over_the_cap_are_dropped_and_counted(config: dict[str, Any]) -> None:
    config["maxEntries"] = 3
    capture = output.Capture()
    for i in range(10):
        capture.add("info", f"line {i}")
    entries = capture.finish()
    assert [e["message"] for e in entries[:2]] == ["line 0", "line 1"]
    assert entries[-1]["level"] == "warn" and "8 more log entries" in entries[-1]["message"]
