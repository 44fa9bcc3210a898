"""workspace.yaml's text <-> Workspace: the saved body as YAML people can read (code in literal `|`
blocks), and its revision (a hash of the text)."""

import hashlib
import io
import re
from collections.abc import Mapping

from attrs import evolve
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from domain.body import workspace_from_body
from domain.errors import DomainError, Unavailable
from domain.model import Json, Workspace

BODY = "workspace.yaml"
# ruamel writes NEL, LS, PS, CR, BOM and control characters raw in plain, quoted and literal
# scalars, and its reader then folds or rejects them; in double quotes they are escaped.
NEEDS_ESCAPES = re.compile(
    "[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\ufeff\u2028\u2029]"
)


def revision_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def parse_body(workspace_id: str, data: bytes) -> Workspace:
    try:
        workspace = workspace_from_body(workspace_id, _load(data))
    except (YAMLError, DomainError, ValueError, TypeError, RecursionError) as exc:  # a hand-edited file
        raise Unavailable(f"storage holds a broken {workspace_id}/{BODY}: {exc}") from None
    return evolve(workspace, revision=revision_of(data))


def _load(data: bytes) -> Json:
    # A YAML instance is not thread-safe, hence one per call. Pure: the C loader speaks only YAML 1.1,
    # which would read the `yes` the 1.2 dumper leaves unquoted as a boolean.
    return YAML(typ="safe", pure=True).load(data)


def dump_body(body: Json) -> bytes:
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096  # long lines stay whole rather than folded
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.BytesIO()
    yaml.dump(_styled(body), out)
    return out.getvalue()


def _styled(value: Json) -> Json:
    """Multi-line text as literal `|` blocks so code reads as code; double quotes where needed."""
    if isinstance(value, Mapping):  # plain dicts and lists: ruamel represents no other containers
        return {_styled_key(key): _styled(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_styled(item) for item in value]
    if isinstance(value, str) and NEEDS_ESCAPES.search(value):
        return DoubleQuotedScalarString(value)
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value


def _styled_key(key: Json) -> Json:
    return DoubleQuotedScalarString(key) if isinstance(key, str) and NEEDS_ESCAPES.search(key) else key
