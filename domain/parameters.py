"""Checks run parameters against the declared types and fills in defaults (pure)."""

from collections.abc import Callable, Mapping

from domain.errors import InvalidParameters, InvalidRequest
from domain.model import Function, Json, ParamType


def _is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Json) -> bool:
    return _is_number(value) and float(value).is_integer()


CHECKS: Mapping[ParamType, Callable[[Json], bool]] = {
    ParamType.STRING: lambda v: isinstance(v, str),
    ParamType.NUMBER: _is_number,
    ParamType.INTEGER: _is_integer,
    ParamType.BOOLEAN: lambda v: isinstance(v, bool),
    ParamType.OBJECT: lambda v: isinstance(v, dict),
    ParamType.ARRAY: lambda v: isinstance(v, list),
    ParamType.NULL: lambda v: v is None,
}


def json_type_name(value: Json) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def bind_parameters(fn: Function, given: Json) -> dict[str, Json]:
    """The parameters a run sees: what was given, plus declared defaults for what was not."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidRequest(f"'parameters' must be an object, got {json_type_name(given)}")
    bound = dict(given)
    for name, declared in fn.declared.items():
        if name not in bound:
            if declared.has_default:
                bound[name] = declared.default
            continue
        if declared.type is not None and not CHECKS[declared.type](bound[name]):
            raise InvalidParameters(
                f"parameter {name!r} must be of type {declared.type.value}, "
                f"got {json_type_name(bound[name])}",
                parameter=name,
                expected=declared.type.value,
            )
    return bound
