"""The errors the use cases raise; only the edges (HTTP, CLI) turn them into status codes."""

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """A failure the caller can act on; `details` are extra fields for the error body."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, Any] = details


class InvalidRequest(DomainError):
    """Malformed input: wrong shapes, bad names, unknown language."""


class InvalidParameters(DomainError):
    """A declared run parameter has the wrong type."""


class CompileError(DomainError):
    """A function does not compile; details name the function, line and column."""


class DependencyError(DomainError):
    """A package cannot be installed or is not allowed."""


class NotFound(DomainError):
    """Unknown workspace or function."""


class Unavailable(DomainError):
    """A runtime or the storage cannot serve right now."""


class StaleCode(Unavailable):
    """A run brought code older than the version its runtime holds now (a save landed meanwhile): the
    use case runs it again with the stored version."""
