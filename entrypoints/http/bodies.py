"""JSON in and out at the HTTP edge: bounded body reading, strict parsing, fast encoding."""

import json
import json.encoder
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
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
    # The ASGI messages themselves, not request.headers and request.stream(): a run reads one small body,
    # and those two build a Headers object and an async generator for it.
    for name, value in request.scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(limit)
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:  # a chunked upload has no Content-Length to trust
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
        return _DECODER.decode(text := raw.decode())
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
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        raise _too_many_digits(text) from None


class _Digits(int):
    """An integer too long to convert, found again by `_too_many_digits`: how many digits it has."""


def _too_many_digits(text: str) -> InvalidRequest:
    """Python converts integers of at most sys.get_int_max_str_digits() digits (4300; more would take
    quadratic time): a longer one is named by its place in the body, as an InvalidRequest."""
    limit = sys.get_int_max_str_digits()

    def integer(digits: str) -> int:
        length = len(digits.lstrip("-"))
        return _Digits(length) if length > limit else int(digits)

    decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite, parse_int=integer)
    try:
        found = _find_digits(decoder.decode(text), "$")
    except RecursionError:  # nested too deeply to walk: the body as a whole
        found = None
    path, digits = found or ("$", limit + 1)
    return InvalidRequest(
        f"the number at {path} has {digits} digits: integers are limited to {limit} digits; "
        "send a longer one as a string",
        path=path,
        limit=limit,
    )


def _find_digits(value: Json, path: str) -> tuple[str, int] | None:
    if isinstance(value, _Digits):
        return path, int(value)
    if isinstance(value, dict):
        items = (
            (f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]", item)
            for key, item in value.items()
        )
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for where, item in items:
        if (found := _find_digits(item, where)) is not None:
            return found
    return None


async def read_json(request: Request, limit: int, empty: Json = MISSING) -> Json:
    """The body's JSON value; an empty body is `empty`, or InvalidRequest when none is given."""
    raw = await read_body(request, limit)
    if raw.strip():
        return parse_json(raw)
    if empty is MISSING:
        raise InvalidRequest("the request body is empty: expected a JSON object")
    return empty


def reusable(options: json.JSONEncoder, check_circular: bool = True) -> Callable[[Any], str]:
    """`options.encode`, without building a C encoder on every call as JSONEncoder.encode does.

    Its circular-reference markers are emptied after a failed call, as a fresh encoder's would be.
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None or options.indent is not None:  # no C accelerator here, or an indented output
        return options.encode
    escape = json.encoder.encode_basestring_ascii if options.ensure_ascii else json.encoder.encode_basestring
    markers: dict[int, Any] | None = {} if check_circular else None
    encode = make(
        markers,
        options.default,
        escape,
        None,
        options.key_separator,
        options.item_separator,
        options.sort_keys,
        options.skipkeys,
        options.allow_nan,
    )

    def encoded(content: Any) -> str:
        try:
            text: str = encode(content, 0)[0]
        except BaseException:
            if markers:
                markers.clear()
            raise
        return text

    return encoded


# One encoder for every answer: json.dumps with options would build a new one per call.
_ENCODE = reusable(json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")))
# JavaScript strings may hold lone surrogates ('\ud800'), which UTF-8 cannot carry but JSON's \u
# escapes can: such an answer goes out ASCII-escaped, the text exactly as the function made it.
_ASCII_ENCODE = reusable(json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")))
_JSON_TYPE = (b"content-type", b"application/json")


class JsonResponse(Response):
    """A compact JSON answer; ValueError/TypeError if the content is not JSON."""

    media_type = "application/json"

    def __init__(
        self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        # What Response.__init__ does for this case, without its general header handling.
        self.status_code = status_code
        self.background = None
        self.body = body = self.render(content)
        raw = (
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            if headers
            else []
        )
        raw.append((b"content-length", str(len(body)).encode()))
        raw.append(_JSON_TYPE)
        self.raw_headers = raw

    def render(self, content: Any) -> bytes:
        text = _ENCODE(content)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return _ASCII_ENCODE(content).encode()
