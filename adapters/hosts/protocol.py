"""The host protocol: what the service and a runtime host say to each other, one JSON object per line.

Written down in docs/hosts.md. Both hosts speak it (runtimes/node/host.mjs, runtimes/python/kernel.py) and
tests/contract/test_hosts.py drives each of them directly with these messages. Every message the service
sends is one of the request classes below; every line a host writes is decoded by `decode` into one of
the reply classes, and nothing else is accepted.
"""

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from attrs import frozen

from domain.errors import CompileError
from domain.model import Json, LogEntry, Outcome, Status

PROTOCOL = 1
Wire = dict[str, Any]


class RunStatus(StrEnum):
    """How a run ended, as a host reports it: the domain's outcomes, and three that only a driver sees."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RESOURCE_LIMIT = "resource_limit"
    NOT_SERIALIZABLE = "not_serializable"
    # The host does not hold the revision the run named: load it and send the run again (docs/hosts.md).
    NOT_LOADED = "not_loaded"
    # Python: the code needs a main interpreter (a compiled extension refused a subinterpreter).
    NEEDS_MAIN = "needs_main"
    # The run's worker or kernel went away under it (another run on it overran): the host broke, not the code.
    ABORTED = "aborted"


# -- service -> host ----------------------------------------------------------------------------


@frozen
class NodeSource:
    """A nodejs function as the Node host compiles it: `source` is the wrapped function, `body` the code."""

    name: str
    source: str
    body: str


@frozen
class PythonFunction:
    """A python function as the kernel compiles and loads it: its parameters become locals."""

    name: str
    code: str
    locals: Sequence[str]
    defaults: str  # JSON text of {parameter: default}
    bindable: bool  # callable by its name from the workspace's other functions


@frozen
class Compile:
    """Check that functions compile; nothing of them runs. Answered by Compiled."""

    functions: Sequence[NodeSource | PythonFunction]

    def wire(self, request_id: int) -> Wire:
        return {"type": "compile", "id": request_id, "functions": [_fields(f) for f in self.functions]}


@frozen
class Load:
    """Hold this revision of a workspace's code, replacing any other (no answer). Node gets the script
    and the folder of the workspace's packages; Python gets the functions."""

    workspace: str
    revision: str
    script: str | None = None
    folder: str | None = None
    functions: Sequence[PythonFunction] = ()

    def wire(self) -> Wire:
        message: Wire = {"type": "load", "workspace": self.workspace, "revision": self.revision}
        if self.script is not None:
            message["script"] = self.script
            message["folder"] = self.folder
        else:
            message["functions"] = [_fields(f) for f in self.functions]
        return message


@frozen
class Run:
    """Run one function of the revision named; answered by Result (NOT_LOADED if that revision is not
    held). `params` are the bound parameters."""

    workspace: str
    revision: str
    function: str
    params: Mapping[str, Json]

    def wire(self, request_id: int) -> Wire:
        return {
            "type": "run",
            "id": request_id,
            "workspace": self.workspace,
            "revision": self.revision,
            "fn": self.function,
            "params": self.params,
        }


@frozen
class Abort:
    """The service's deadline for run `id` passed: stop it (the Node host ends its worker). No answer."""

    id: int

    def wire(self) -> Wire:
        return {"type": "abort", "id": self.id}


@frozen
class Evict:
    """Let go of a workspace's code and state (no answer)."""

    workspace: str

    def wire(self) -> Wire:
        return {"type": "evict", "workspace": self.workspace}


@frozen
class Inspect:
    """Python: which of these modules need compiled extension modules. Answered by Inspected."""

    modules: Sequence[str]

    def wire(self, request_id: int) -> Wire:
        return {"type": "inspect", "id": request_id, "modules": list(self.modules)}


SHUTDOWN: Wire = {"type": "shutdown"}  # stop now (no answer: the host exits)


# -- host -> service ----------------------------------------------------------------------------


@frozen
class Ready:
    """The host's first line: it speaks `protocol` and runs `version` (Node's or Python's)."""

    protocol: int
    version: str
    pid: int | None = None


@frozen
class Result:
    """How a run ended. Timings are the host's clock, in ms."""

    id: int
    status: RunStatus
    result: Json = None
    logs: Sequence[Mapping[str, str]] = ()
    duration_ms: float = 0.0
    error: Mapping[str, Json] | None = None
    started_at: float | None = None  # when the function started (after any queue and cold start)
    received_at: float | None = None  # when the host read the run
    cold: bool = False
    cold_ms: float = 0.0

    def outcome(self) -> Outcome:
        """The run's Outcome: the one conversion of a result between the host and the HTTP answer."""
        timings = {"run": self.duration_ms}
        if self.started_at is not None and self.received_at is not None:
            timings["queue"] = max(0.0, self.started_at - self.received_at - self.cold_ms)
        if self.cold:
            timings["cold"] = self.cold_ms
        return Outcome(
            Status(self.status),
            result=self.result,
            logs=[LogEntry(e["level"], e["message"], e["timestamp"]) for e in self.logs],
            duration_ms=self.duration_ms,
            error=self.error,
            cold=self.cold,
            timings=timings,
        )


@frozen
class Compiled:
    """The compile check's answer: one problem per function that does not compile (none: all do)."""

    id: int
    errors: Sequence[Mapping[str, Json]]

    def raise_first(self) -> None:
        """A CompileError naming the first function, line and column, if any does not compile."""
        if self.errors:
            first = self.errors[0]
            raise CompileError(
                f"function {first['function']!r} does not compile: {first['message']} "
                f"(line {first['line']}, column {first['column']})",
                function=first["function"],
                line=first["line"],
                column=first["column"],
                errors=list(self.errors),
            )


@frozen
class Inspected:
    """Module -> the distribution whose compiled extensions it needs, or None."""

    id: int
    compiled: Mapping[str, str | None]


@frozen
class Refused:
    """The host could not serve this one request (out of memory, ...), and goes on."""

    id: int
    message: str


@frozen
class ProtocolError:
    """The host could not read a line of ours; it exits after saying so."""

    detail: str


Reply = Result | Compiled | Inspected | Refused
HostMessage = Ready | Reply | ProtocolError


class Malformed(ValueError):
    """A line that is not one of the host's messages: the host cannot be trusted any more."""


def decode(message: Wire) -> HostMessage:
    """A host's line (parsed JSON) as its message; Malformed if it is none of them."""
    if not isinstance(message, dict):
        raise Malformed(f"a line that is not a JSON object: {type(message).__name__}")
    try:
        kind = message["type"]
        if kind == "result":
            host = message.get("host") or {}
            return Result(
                message["id"],
                RunStatus(message["status"]),
                message.get("result"),
                message.get("logs") or (),
                float(message.get("durationMs", 0.0)),
                message.get("error"),
                message.get("startedAt"),
                host.get("receivedAt"),
                bool(host.get("cold")),
                float(host.get("coldMs", 0.0)),
            )
        if kind == "compiled":
            return Compiled(message["id"], message["errors"])
        if kind == "inspected":
            return Inspected(message["id"], message["compiled"])
        if kind == "unavailable":
            return Refused(message["id"], str(message.get("message", "the host could not answer")))
        if kind == "ready":
            version = message.get("node") or message.get("python") or ""
            return Ready(int(message["protocol"]), str(version), message.get("pid"))
        if kind == "protocol_error":
            return ProtocolError(str(message.get("detail")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Malformed(f"a malformed {message.get('type')!r} message: {exc!r}") from None
    raise Malformed(f"an unknown message type {kind!r}")


def _fields(value: NodeSource | PythonFunction) -> Wire:
    if isinstance(value, NodeSource):
        return {"name": value.name, "source": value.source, "body": value.body}
    return {
        "name": value.name,
        "code": value.code,
        "locals": list(value.locals),
        "defaults": value.defaults,
        "bindable": value.bindable,
    }
