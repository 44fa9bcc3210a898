"""The reply of a run as JSON text: results JSON can hold, errors in the user's terms, size limits."""

import base64
import datetime
import decimal
import json
import traceback
from typing import Any

from .state import CONFIG


def to_json(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 1 << 53 else float(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if hasattr(type(value), "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} cannot become JSON")


_encode = json.JSONEncoder(default=to_json, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode


def stack_of(exc: BaseException, names: set[str]) -> str:
    """The traceback in the user's terms: only frames of the workspace's functions, in their own lines."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in names]
    lines = ["Traceback (most recent call last):"]
    for frame in frames:
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.filename}')
        if frame.line:
            lines.append(f"    {frame.line}")
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "\n".join(line.rstrip("\n") for line in lines)


def error_of(exc: BaseException, names: set[str]) -> dict[str, Any]:
    return {"name": type(exc).__name__, "message": clip(str(exc)), "stack": clip(stack_of(exc, names))}


def clip(text: str) -> str:
    """An error's text is for people: a 50 MB message would cost the kernel and the service its size."""
    limit = CONFIG["maxErrorChars"]
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def finish(reply: dict[str, Any]) -> str:
    """The reply as JSON text the kernel can write as UTF-8."""
    text = encoded(reply)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ('\ud800') in a result, a log or a message: it becomes '?'
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def encoded(reply: dict[str, Any]) -> str:
    """The reply as JSON text; a result that JSON cannot hold, or too big a one, changes the status."""
    try:
        text = _encode(reply)
    except (TypeError, ValueError, RecursionError) as exc:
        reply.pop("result", None)
        reply["status"] = "not_serializable"
        reply["error"] = {"name": "ResultNotSerializable", "message": f"the result cannot become JSON: {exc}"}
        return _encode(reply)
    except MemoryError:
        reply.pop("result", None)
        reply.update(
            status="resource_limit", error={"name": "MemoryError", "message": "the result is too large"}
        )
        return _encode(reply)
    if len(text) > CONFIG["maxResultBytes"] and reply["status"] == "succeeded":
        reply.pop("result")
        limit = CONFIG["maxResultBytes"]
        reply.update(
            status="resource_limit", error={"name": "ResultTooLarge", "message": f"result over {limit} bytes"}
        )
        return _encode(reply)
    return text
