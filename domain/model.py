"""Workspaces, functions, parameters and run outcomes: immutable values, no I/O."""

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from attrs import evolve, field, frozen

from domain.errors import InvalidRequest, NotFound

Json = Any
"""A value that JSON can hold (dict, list, str, int, float, bool, None)."""

WORKSPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
FUNCTION_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$-]{0,127}")


def check_workspace_id(workspace_id: str) -> str:
    if not isinstance(workspace_id, str) or not WORKSPACE_ID.fullmatch(workspace_id):
        raise InvalidRequest(
            f"invalid workspace id {workspace_id!r}: 1-128 characters of A-Z a-z 0-9 _ - ., "
            "starting with a letter or digit"
        )
    return workspace_id


def check_function_name(name: str) -> str:
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid function name {name!r}: 1-128 characters of A-Z a-z 0-9 _ - . $, "
            "starting with a letter, _ or $"
        )
    return name


class Language(StrEnum):
    NODEJS = "nodejs"
    PYTHON = "python"


class ParamType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"
    NULL = "null"


class _Missing:
    """The absence of a value where `None` (JSON null) is a value."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@frozen
class Parameter:
    """A declared run parameter. Fields left out of the body stay left out."""

    type: ParamType | None = None
    description: str | None = None
    default: Json = MISSING
    extras: Mapping[str, Json] = field(factory=dict)

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING


@frozen
class Function:
    """One user function: the body of a function in `language`."""

    code: str
    language: Language | None = None  # None: not given in the body, which means nodejs
    parameters: Mapping[str, Parameter] | None = None
    extras: Mapping[str, Json] = field(factory=dict)

    @property
    def runs_on(self) -> Language:
        return self.language or Language.NODEJS

    @property
    def declared(self) -> Mapping[str, Parameter]:
        return self.parameters or {}


def _valid_id(_instance: object, _attribute: object, value: str) -> None:
    check_workspace_id(value)


def _valid_function_names(_instance: object, _attribute: object, value: Mapping[str, Function]) -> None:
    for name in value:
        check_function_name(name)


@frozen
class Workspace:
    """A named set of functions saved together; `revision` is set by the store."""

    id: str = field(validator=_valid_id)
    functions: Mapping[str, Function] = field(factory=dict, validator=_valid_function_names)
    dependencies: Mapping[str, str] | None = None
    disable_npm_registry: bool | None = None
    extras: Mapping[str, Json] = field(factory=dict)  # unknown keys, kept and echoed back
    revision: str = field(default="", eq=False)

    def function(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            raise NotFound(f"function {name!r} not found in workspace {self.id!r}") from None

    def languages(self) -> set[Language]:
        return {fn.runs_on for fn in self.functions.values()}

    def functions_in(self, language: Language) -> dict[str, Function]:
        return {name: fn for name, fn in self.functions.items() if fn.runs_on is language}

    def functions_in_nodejs(self) -> dict[str, Function]:
        return self.functions_in(Language.NODEJS)

    def with_function(self, name: str, fn: Function) -> "Workspace":
        return evolve(self, functions={**self.functions, name: fn}, revision="")


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RESOURCE_LIMIT = "resource_limit"
    NOT_SERIALIZABLE = "not_serializable"


@frozen
class LogEntry:
    level: str
    message: str
    timestamp: str


@frozen
class Outcome:
    """What a run gave: a result, or an error as data (the edge picks the status code)."""

    status: Status
    result: Json = None
    logs: Sequence[LogEntry] = ()
    duration_ms: float = 0.0
    error: Mapping[str, Json] | None = None
    cold: bool = False
    timings: Mapping[str, float] = field(factory=dict)  # Server-Timing: queue, cold, run (ms)

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCEEDED
