"""The workspace body <-> Workspace. HTTP bodies and workspace.yaml share this one converter.

A body comes back exactly as it was sent: fields left out stay left out and unknown keys are kept
(in `extras`) at every level.
"""

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import attrs
from cattrs import ClassValidationError, Converter, transform_error
from cattrs.cols import is_mapping, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from domain.errors import InvalidRequest
from domain.model import Function, Json, Language, Parameter, ParamType, Workspace, check_function_name

RENAMES = {"disable_npm_registry": "disableNpmRegistry"}
HIDDEN = ("id", "extras", "revision")  # never part of a body's own keys
PLACEHOLDER_ID = "workspace"


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {name}, got {_json_name(value)}")
        return value

    return hook


def _json_name(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), "an object")


def _describe(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc)


def _enum(value: Any, kind: type[Enum]) -> Enum:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise ValueError(f"must be one of {allowed}, got {value!r}") from None


def _mapping(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {_json_name(value)}")
    return value


def _object_of(kind: Any, c: Converter) -> Callable[[Any, Any], Any]:
    """A JSON object check in front of cattrs' own mapping hook (which would accept a list of pairs)."""
    inner = mapping_structure_factory(kind, c)

    def hook(value: Any, _: Any) -> Any:
        return inner(_mapping(value, None), kind)

    return hook


def _body_keys(cls: type) -> dict[str, str]:
    """Attribute name -> body key, for the attributes a body carries."""
    return {a.name: RENAMES.get(a.name, a.name) for a in attrs.fields(cls) if a.name not in HIDDEN}


def _register(c: Converter, cls: type) -> None:
    keys = _body_keys(cls)
    renames = {name: override(rename=key) for name, key in keys.items() if key != name}
    structure: Callable[[Any, Any], Any] = make_dict_structure_fn(cls, c, **renames)  # type: ignore[arg-type]
    known = set(keys.values())

    def structure_hook(value: Any, _: Any) -> Any:
        body = _mapping(value, None)
        extras = {k: v for k, v in body.items() if k not in known}
        fields = {k: v for k, v in body.items() if k in known}
        if cls is Workspace:
            fields["id"] = PLACEHOLDER_ID  # the real id comes from the path, set by workspace_from_body
        return structure({**fields, "extras": extras}, cls)

    unstructure: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
        cls,
        c,
        _cattrs_omit_if_default=True,
        functions=override(omit_if_default=False),
        id=override(omit=True),
        extras=override(omit=True),
        revision=override(omit=True),
        **renames,  # type: ignore[arg-type]
    )

    def unstructure_hook(obj: Any) -> dict[str, Any]:
        return {**unstructure(obj), **obj.extras}

    c.register_structure_hook(cls, structure_hook)
    c.register_unstructure_hook(cls, unstructure_hook)


def make_body_converter() -> Converter:
    c = Converter(detailed_validation=True)
    c.register_structure_hook(str, _strict(str, "a string"))
    c.register_structure_hook(bool, _strict(bool, "a boolean"))
    c.register_structure_hook(Json, lambda v, _: v)
    for kind in (Language, ParamType):  # before str's hook would match these str subclasses
        c.register_structure_hook(kind, _enum)
        c.register_unstructure_hook(kind, lambda e: e.value)
    c.register_structure_hook_func(lambda t: t == Mapping[str, Json], _mapping)
    c.register_structure_hook_factory(is_mapping, lambda t: _object_of(t, c))
    for cls in (Parameter, Function, Workspace):
        _register(c, cls)
    return c


_CONVERTER = make_body_converter()


def workspace_from_body(workspace_id: str, body: Json, converter: Converter = _CONVERTER) -> Workspace:
    """Validate a save body; InvalidRequest says which field is wrong and why."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the workspace body must be a JSON object, got {_json_name(body)}")
    _check_storable(body, "$")
    if "functions" not in body:
        raise InvalidRequest("'functions' is required: an object of function name -> function")
    if isinstance(body["functions"], dict):
        for name in body["functions"]:
            check_function_name(name)
    try:
        workspace = converter.structure(body, Workspace)
    except ClassValidationError as exc:
        problems = [
            p.replace(".disable_npm_registry", ".disableNpmRegistry")
            for p in transform_error(exc, path="$", format_exception=_describe)
        ]
        raise InvalidRequest("invalid workspace body: " + "; ".join(problems)) from None
    return attrs.evolve(workspace, id=workspace_id)


def _check_storable(value: Json, path: str) -> None:
    """Every string must survive as UTF-8 text (workspace.yaml, index.js): no lone surrogates."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, path)
            _check_storable(item, f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}[{index}]")
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequest(
                f"invalid workspace body: a lone surrogate {value[exc.start]!r} @ {path} cannot be stored as "
                "text; send the character it was meant to be part of"
            ) from None


def body_from_workspace(workspace: Workspace, converter: Converter = _CONVERTER) -> dict[str, Json]:
    """The body as it was sent."""
    body: dict[str, Json] = converter.unstructure(workspace, Workspace)
    return body
