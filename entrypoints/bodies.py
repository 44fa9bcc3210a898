"""JSON in and out at the HTTP edge: bounded body reading, strict parsing, fast encoding."""

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from domain.errors import DomainError, InvalidRequest
from domain.model import MISSING, Json


class PayloadTooLarge(DomainError):
    """The request body is over REQUEST_MAX_SIZE."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is over the {human_size(limit)} limit; REQUEST_MAX_SIZE sets it",
            limit=limit,
            setting="REQUEST_MAX_SIZE",
        )


def human_size(size: int) -> str:
    for unit, scale in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size} bytes"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to be over `limit` bytes: it is never buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # a chunked upload has no Content-Length to trust
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> Json:
    # Python's json accepts NaN and Infinity; JSON (and the original service) does not.
    raise InvalidRequest(f"malformed JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    # 1e400 parses as infinity, which neither JSON nor the runtimes can carry back out.
    number = float(text)
    if not math.isfinite(number):
        raise InvalidRequest(f"malformed JSON: the number {text[:40]} is out of range")
    return number


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def parse_json(raw: bytes) -> Json:
    """The JSON value of a body; InvalidRequest says what is wrong and where."""
    try:
        return _DECODER.decode(raw.decode())
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the request body is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except RecursionError:
        raise InvalidRequest("malformed JSON: nested too deeply") from None


async def read_json(request: Request, limit: int, empty: Json = MISSING) -> Json:
    """The body's JSON value; an empty body is `empty`, or InvalidRequest when none is given."""
    raw = await read_body(request, limit)
    if raw.strip():
        return parse_json(raw)
    if empty is MISSING:
        raise InvalidRequest("the request body is empty: expected a JSON object")
    return empty


# One encoder for every answer: json.dumps with options would build a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# JavaScript strings may hold lone surrogates ('\ud800'), which UTF-8 cannot carry but JSON's \u
# escapes can: such an answer goes out ASCII-escaped, the text exactly as the function made it.
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


class JsonResponse(Response):
    """A compact JSON answer; ValueError/TypeError if the content is not JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        text = _ENCODER.encode(content)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return _ASCII_ENCODER.encode(content).encode()
