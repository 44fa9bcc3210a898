"""What user code may read by name: getattr and str.format guards (the compile checks cover `x.name`)."""

import operator
import string
import types
from _string import formatter_field_name_split  # type: ignore[import-not-found]
from typing import Any

from .checks import ALLOWED_DUNDERS, FORMAT_METHODS, REFUSED_ATTRIBUTES


def safe_name(name: Any) -> Any:
    if isinstance(name, str) and (
        (name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS)
        or name in REFUSED_ATTRIBUTES
    ):
        raise AttributeError(
            f"attribute {name!r} is not allowed in functions: not supported, because it leads to the "
            "interpreter's internals (use type(x) for a class)"
        )
    return name


def safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    value = getattr(obj, safe_name(name), *default)
    return guarded_format(value) if name in FORMAT_METHODS else value


def format_attribute(obj: Any, name: str) -> Any:
    return guarded_format(getattr(obj, name))


def check_format(text: Any) -> None:
    """Refuse a format string whose fields read refused attributes (`{0.__class__}`, `{0.gi_frame}`)."""
    if not isinstance(text, str) or "{" not in text:
        return
    for _literal, field, spec, _conversion in string.Formatter().parse(text):
        if field:
            _first, rest = formatter_field_name_split(field)
            for is_attribute, key in rest:
                if is_attribute:
                    safe_name(key)
        if spec:
            check_format(spec)


def guarded_format(value: Any) -> Any:
    """`str.format` and `str.format_map`, bound or not, check their format string first."""
    if value is str.format or value is str.format_map:
        method = value

        def unbound(text: Any, *args: Any, **kwargs: Any) -> Any:
            check_format(text)
            return method(text, *args, **kwargs)

        return unbound
    if isinstance(value, types.BuiltinMethodType) and isinstance(value.__self__, str):
        if value.__name__ in FORMAT_METHODS:
            check_format(value.__self__)
    return value


def safe_hasattr(obj: Any, name: str) -> bool:
    return hasattr(obj, safe_name(name))


def safe_setattr(obj: Any, name: str, value: Any) -> None:
    setattr(obj, safe_name(name), value)


def safe_delattr(obj: Any, name: str) -> None:
    delattr(obj, safe_name(name))


def safe_attrgetter(*names: str) -> Any:
    for name in names:
        for part in name.split("."):
            safe_name(part)
            if part in FORMAT_METHODS:
                raise AttributeError(
                    f"attrgetter of {part!r} is not allowed in functions: call the method by its name"
                )
    return operator.attrgetter(*names)


def safe_methodcaller(name: str, *args: Any, **kwargs: Any) -> Any:
    if name in FORMAT_METHODS:
        return lambda obj: safe_getattr(obj, name)(*args, **kwargs)
    return operator.methodcaller(safe_name(name), *args, **kwargs)
