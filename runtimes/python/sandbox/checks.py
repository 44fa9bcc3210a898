"""What user code may say, checked when a workspace is saved and again when it loads.

A function's body is compiled as the body of `def <name>(parameters, *declared)`, in the user's own line
numbers; nodes that name the interpreter's internals are refused (SyntaxError), and `x.format` goes
through a guard (attributes.format_attribute) since str.format walks its arguments by name.
"""

import __future__

import ast
import sys
import types
from typing import Any

# Dunder attributes user code may name: the ones ordinary classes need. Everything else that starts
# and ends with `__` leads towards interpreter internals (__class__, __subclasses__, __globals__, ...).
ALLOWED_DUNDERS = frozenset(
    "__name__ __qualname__ __doc__ __init__ __post_init__ __len__ __iter__ __next__ __enter__ __exit__ "
    "__aenter__ __aexit__ __getitem__ __setitem__ __delitem__ __contains__ __str__ __repr__ __eq__ "
    "__ne__ __lt__ __le__ __gt__ __ge__ __hash__ __bool__ __call__ __add__ __sub__ __mul__ __truediv__ "
    "__floordiv__ __mod__ __pow__ __neg__ __abs__ __version__ __all__ __slots__ __module__".split()
)
# Attributes of frames, tracebacks, generators and code objects: the introspection routes.
REFUSED_ATTRIBUTES = frozenset(
    "f_globals f_locals f_builtins f_back f_code f_trace tb_frame tb_next gi_frame gi_code cr_frame "
    "cr_code ag_frame ag_code co_code mro".split()
)
# What user code may read of an object's class: `self.__class__.__name__` in a `__repr__`.
CLASS_NAMES = frozenset({"__name__", "__qualname__", "__module__"})
FORMAT_METHODS = frozenset({"format", "format_map"})
GUARD = "__sandbox_attribute__"  # what `x.format` compiles to: user code cannot name it
REFUSED_NAMES = frozenset({"__builtins__", "__loader__", "__spec__", GUARD})


def refusal(node: ast.AST, names_a_class: bool = False) -> str | None:
    """Why a node of user code is refused at save, or None; `names_a_class` for an `x.__class__` whose
    `__name__`, `__qualname__` or `__module__` is read."""
    if isinstance(node, ast.Attribute):
        name = node.attr
        if name == "__class__" and not names_a_class:
            return (
                "attribute '__class__' is not allowed in functions: use type(x) (reading "
                "x.__class__.__name__, __qualname__ or __module__ is allowed)"
            )
        if name == "__class__":
            return None
        if name.startswith("__") and name.endswith("__") and name not in ALLOWED_DUNDERS:
            return (
                f"attribute {name!r} is not allowed in functions: not supported, because it leads to "
                "the interpreter's internals"
            )
        if name in REFUSED_ATTRIBUTES:
            return (
                f"attribute {name!r} is not allowed in functions: not supported, because frames and code "
                "objects reach other code's variables"
            )
    if isinstance(node, ast.Name) and node.id in REFUSED_NAMES:
        return (
            f"name {node.id!r} is not allowed in functions: not supported, because it reaches the "
            "interpreter's internals"
        )
    return None


def class_names(node: ast.AST) -> ast.AST | None:
    """The `x.__class__` of `x.__class__.__name__` (or `__qualname__`, `__module__`) being read, else None."""
    if (
        isinstance(node, ast.Attribute)
        and node.attr in CLASS_NAMES
        and isinstance(node.ctx, ast.Load)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "__class__"
        and isinstance(node.value.ctx, ast.Load)
    ):
        return node.value
    return None


def check_tree(tree: ast.AST, name: str) -> None:
    """SyntaxError at the first refused node (in the user's line and column)."""
    reading_names: set[int] = set()  # `x.__class__` nodes whose name is read: ast.walk meets parents first
    for node in ast.walk(tree):
        if (inner := class_names(node)) is not None:
            reading_names.add(id(inner))
        if (why := refusal(node, id(node) in reading_names)) is not None:
            raise SyntaxError(why, (name, node.lineno, node.col_offset + 1, None))  # type: ignore[attr-defined]


def future_flags(body: list[ast.stmt], name: str) -> tuple[list[ast.stmt], int]:
    """`from __future__ import ...` at the start of a body (after its docstring): the body without them,
    and the compiler flags they stand for (the body is compiled as a function's, where they cannot be)."""
    start = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
    flags, end = 0, start
    for statement in body[start:]:
        if not isinstance(statement, ast.ImportFrom) or statement.module != "__future__":
            break
        for alias in statement.names:
            if alias.name not in __future__.all_feature_names:
                where = (name, statement.lineno, statement.col_offset + 1, None)
                raise SyntaxError(f"future feature {alias.name} is not defined", where)
            flags |= getattr(__future__, alias.name).compiler_flag
        end += 1
    return body[:start] + body[end:], flags


class FormatGuard(ast.NodeTransformer):
    """`x.format` becomes `__sandbox_attribute__(x, "format")`: str.format walks its arguments by name."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr not in FORMAT_METHODS or not isinstance(node.ctx, ast.Load):
            return node
        call = ast.Call(ast.Name(GUARD, ast.Load()), [node.value, ast.Constant(node.attr)], [])
        return ast.copy_location(call, node)


def is_async(body: list[ast.stmt]) -> bool:
    """`await` (or async for/with) in the body itself, not in a nested function, makes it async."""
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return False


def assigns_result(body: list[ast.stmt]) -> bool:
    todo: list[ast.AST] = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and node.id == "result" and isinstance(node.ctx, ast.Store):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))
    return False


def compile_function(spec: dict[str, Any]) -> types.CodeType:
    """The user's body as the body of `def <name>(parameters, *declared)`, with the user's own line numbers.

    Raises SyntaxError (with lineno/offset in the user's code) for code that does not compile or that
    names a refused attribute.
    """
    name, code = spec["name"], spec["code"]
    tree = ast.parse(code, filename=name)
    check_tree(tree, name)
    tree = FormatGuard().visit(tree)
    statements, flags = future_flags(tree.body, name)
    body = statements or [ast.Pass()]
    if assigns_result(body):
        body = [*body, ast.Return(ast.Name("result", ast.Load()))]
    args = ast.arguments(
        posonlyargs=[],
        args=[ast.arg("parameters"), *(ast.arg(p) for p in spec["locals"])],
        kwonlyargs=[],
        kw_defaults=[],
        defaults=[],
    )
    kind = ast.AsyncFunctionDef if is_async(statements) else ast.FunctionDef
    extra: dict[str, Any] = {"type_params": []} if sys.version_info >= (3, 12) else {}
    definition = kind(name="_user", args=args, body=body, decorator_list=[], returns=None, **extra)
    module = ast.Module([definition], type_ignores=[])
    ast.fix_missing_locations(module)  # the wrapper itself sits on the user's line 1
    compiled: types.CodeType = compile(module, name, "exec", flags=flags, dont_inherit=True)
    return compiled


def check(request: dict[str, Any]) -> dict[str, Any]:
    """Compile every function; report the errors as {function, message, line, column}."""
    errors = []
    for spec in request["functions"]:
        try:
            compile_function(spec)
        except SyntaxError as exc:
            errors.append(
                {
                    "function": spec["name"],
                    "message": exc.msg,
                    "line": exc.lineno or 1,
                    "column": exc.offset or 1,
                }
            )
    return {"errors": errors}
