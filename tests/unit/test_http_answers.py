"""How outcomes and bodies become HTTP answers, without a server."""

import json

import pytest
from starlette.requests import Request
from starlette.types import Message

from domain.model import LogEntry, Outcome, Status
from entrypoints.http.app import outcome_response
from entrypoints.http.bodies import PayloadTooLarge, human_size, read_body

pytestmark = pytest.mark.anyio


def answer_of(outcome: Outcome) -> tuple[int, dict[str, str], dict[str, object]]:
    response = outcome_response(outcome)
    return response.status_code, dict(response.headers), json.loads(bytes(response.body))


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (Status.FAILED, 422, "FunctionError"),
        (Status.RESOURCE_LIMIT, 422, "ResourceLimitError"),
        (Status.NOT_SERIALIZABLE, 422, "ResultNotSerializable"),
        (Status.TIMED_OUT, 504, "TimeoutError"),
    ],
)
async def test_each_failed_outcome_has_its_status_and_error_type(
    status: Status, code: int, kind: str
) -> None:
    got, _, body = answer_of(Outcome(status, duration_ms=3.5))
    assert got == code
    assert body["error"] == {"type": kind, "message": body["error"]["message"]}  # type: ignore[index]
    assert body["logs"] == [] and body["duration"] == 3.5


async def test_a_failure_keeps_the_runtimes_error_fields_but_not_its_type() -> None:
    error = {"type": "x", "message": "bad", "name": "TypeError", "stack": "TypeError: bad\n    at f (f:1:1)"}
    _, _, body = answer_of(Outcome(Status.FAILED, error=error))
    assert body["error"] == {**error, "type": "FunctionError"}


async def test_logs_keep_their_order_and_fields() -> None:
    logs = [
        LogEntry("log", "one", "2026-01-01T00:00:00.000Z"),
        LogEntry("warn", "two", "2026-01-01T00:00:01.000Z"),
    ]
    _, _, body = answer_of(Outcome(Status.SUCCEEDED, result=1, logs=logs))
    assert body["logs"] == [
        {"level": "log", "message": "one", "timestamp": "2026-01-01T00:00:00.000Z"},
        {"level": "warn", "message": "two", "timestamp": "2026-01-01T00:00:01.000Z"},
    ]


async def test_server_timing_lists_the_timings_present_in_order() -> None:
    timings = {"queue": 0.12, "cold": 15.3, "run": 0.84}
    _, headers, _ = answer_of(Outcome(Status.SUCCEEDED, cold=True, timings=timings))
    assert headers["server-timing"] == "queue;dur=0.12, cold;dur=15.30, run;dur=0.84"
    assert headers["x-functions-worker"] == "cold"


async def test_server_timing_falls_back_to_the_run_duration() -> None:
    _, headers, _ = answer_of(Outcome(Status.TIMED_OUT, duration_ms=20_000, timings={"queue": 1}))
    assert headers["server-timing"] == "queue;dur=1.00, run;dur=20000.00"


def request_with(headers: list[tuple[bytes, bytes]], chunk: bytes = b"x" * 1000) -> tuple[Request, list[int]]:
    reads = [0]

    async def receive() -> Message:  # an endless upload
        reads[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive), reads


async def test_an_endless_body_is_refused_right_after_the_limit() -> None:
    request, reads = request_with([])
    with pytest.raises(PayloadTooLarge):
        await read_body(request, 10_000)
    assert reads == [11]


async def test_a_too_large_content_length_is_refused_before_reading() -> None:
    request, reads = request_with([(b"content-length", str(2 << 30).encode())])
    with pytest.raises(PayloadTooLarge) as caught:
        await read_body(request, 1 << 20)
    assert reads == [0]
    assert "1mb" in caught.value.message and caught.value.details["limit"] == 1 << 20


@pytest.mark.parametrize(("size", "text"), [(1 << 20, "1mb"), (500 << 10, "500kb"), (1500, "1500 bytes")])
def test_limits_are_named_as_they_are_configured(size: int, text: str) -> None:
    assert human_size(size) == text
