"""User-supplied text templates, rendered in jinja2's sandbox.

Merchants write the texts shown on a pass ("{{ stamps }} / {{ required }}"). Those strings are
untrusted. Two layers keep them harmless:

1. A whitelist of template syntax. Pass texts need substitutions, conditions and a few filters,
   not programs: no ``{% set %}``, loops, macros, calls, attribute or item access, ``%``/``**``
   operators, includes or imports. Without assignment or loops nothing can grow by iteration, so
   output size and work are bounded by the (bounded) source.
   Filters and tests are whitelisted with their arguments: constants (or a variable for
   ``default``) within bounds, so no argument can make jinja assert or allocate (``truncate(1)``
   raised AssertionError at serving time). Nesting is bounded before parsing and in the parsed
   tree, so a deep text is one error rather than a RecursionError.
2. jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` underneath, with no loader (no
   file system access) and no globals (``{{ range }}`` printed a function's address), should
   anything slip past the whitelist.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TextTemplateError

_log = logging.getLogger(__name__)

# A text on a pass is short; bound what one render can produce.
MAX_OUTPUT = 2_000
MAX_SOURCE = 2_000
#: Brackets open at once in a text (checked before parsing: jinja's parser recurses on them).
MAX_BRACKETS = 16
#: Depth of the parsed tree (a chain of 400 `+` parses iteratively but compiles recursively).
MAX_DEPTH = 48

#: The variables a card's texts see (``model.text_context`` gives exactly these).
TEXT_VARIABLES: frozenset[str] = frozenset(
    {
        "stamps",
        "required",
        "remaining",
        "next_reward",
        "percent",
        "holder_name",
        "vouchers_ready",
        "card_number",
        "organization",
    }
)
#: Names jinja resolves by itself (template reference, loop state): never a merchant's variable.
_RESERVED_NAMES = frozenset({"self", "loop", "super", "caller", "varargs", "kwargs"})

#: The syntax a text may use.
_ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Const,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Concat,
    nodes.Filter,
    nodes.Test,
)
# -- filters and tests, with their arguments ---------------------------------------------------

#: Checks one argument node; returns the reason it is refused, or None.
_ArgCheck = Callable[[nodes.Expr], str | None]


def _const(kind: type | tuple[type, ...], what: str, ok: Callable[[Any], bool]) -> _ArgCheck:
    def check(node: nodes.Expr) -> str | None:
        if not isinstance(node, nodes.Const):
            return f"must be a constant {what}"
        value = node.value
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            return f"must be {what}"
        if not isinstance(value, kind) or not ok(value):
            return f"must be {what}"
        return None

    return check


def _const_or_variable(node: nodes.Expr) -> str | None:
    if isinstance(node, nodes.Name):
        return None
    if isinstance(node, nodes.Const) and (
        node.value is None
        or isinstance(node.value, bool | int | float)
        or (isinstance(node.value, str) and len(node.value) <= 200)
    ):
        return None
    return "must be a variable or a constant (a string of at most 200 characters)"


_BOOL = _const(bool, "true or false", lambda v: True)


class _Signature(NamedTuple):
    params: tuple[tuple[str, _ArgCheck], ...]


def _sig(*params: tuple[str, _ArgCheck]) -> _Signature:
    return _Signature(params)


_ROUND_METHODS = frozenset({"common", "ceil", "floor"})

#: Filters whose output is bounded by their input, and what each may be given.
_FILTERS: dict[str, _Signature] = {
    "upper": _sig(),
    "lower": _sig(),
    "title": _sig(),
    "capitalize": _sig(),
    "trim": _sig(),
    "string": _sig(),
    "abs": _sig(),
    "length": _sig(),
    "count": _sig(),
    "default": _sig(("default_value", _const_or_variable), ("boolean", _BOOL)),
    "d": _sig(("default_value", _const_or_variable), ("boolean", _BOOL)),
    "int": _sig(
        ("default", _const(int, "an integer", lambda v: abs(v) < 10**9)),
        ("base", _const(int, "2, 8, 10 or 16", lambda v: v in (2, 8, 10, 16))),
    ),
    "round": _sig(
        ("precision", _const(int, "an integer from 0 to 6", lambda v: 0 <= v <= 6)),
        ("method", _const(str, "'common', 'ceil' or 'floor'", lambda v: v in _ROUND_METHODS)),
    ),
    # jinja asserts length >= len(end): checked below with the end actually given
    "truncate": _sig(
        (
            "length",
            _const(int, f"an integer from 1 to {MAX_OUTPUT}", lambda v: 1 <= v <= MAX_OUTPUT),
        ),
        ("killwords", _BOOL),
        ("end", _const(str, "a string of at most 10 characters", lambda v: len(v) <= 10)),
        ("leeway", _const(int, "an integer from 0 to 100", lambda v: 0 <= v <= 100)),
    ),
}
_COMPARE = _sig(("other", _const_or_variable))
_PLAIN_TESTS = (
    "defined", "undefined", "none", "number", "string", "integer", "float", "boolean",
    "true", "false", "even", "odd", "lower", "upper",
)  # fmt: skip
_COMPARE_TESTS = (
    "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt",
    "greaterthan", ">", "ge", ">=", "in",
)  # fmt: skip
#: Tests (``x is odd``): the answer is a bool, so only arguments need bounds.
_TESTS: dict[str, _Signature] = {
    **{name: _sig() for name in _PLAIN_TESTS},
    **{name: _COMPARE for name in _COMPARE_TESTS},
    "divisibleby": _sig(
        ("num", _const(int, "an integer from 1 to 10**6", lambda v: 0 < v <= 10**6))
    ),
}


def _check_arguments(node: nodes.Filter | nodes.Test) -> str | None:
    what = "filter" if isinstance(node, nodes.Filter) else "test"
    table = _FILTERS if isinstance(node, nodes.Filter) else _TESTS
    signature = table.get(node.name)
    if signature is None or node.name.startswith("_"):
        allowed = ", ".join(sorted(n for n in table if n.isidentifier()))
        return f"{what} {node.name!r} is not allowed (allowed: {allowed})"
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return f"{what} {node.name!r}: no *args or **kwargs"
    params = dict(signature.params)
    if len(node.args) > len(signature.params):
        return f"{what} {node.name!r} takes at most {len(signature.params)} argument(s)"
    given: dict[str, nodes.Expr] = {}
    for (name, _), arg in zip(signature.params, node.args, strict=False):
        given[name] = arg
    for kw in cast(list[nodes.Keyword], node.kwargs):  # jinja annotates them as Pair
        if kw.key not in params or kw.key in given:
            return f"{what} {node.name!r} has no argument {kw.key!r}"
        given[kw.key] = kw.value
    for key, value in given.items():
        if reason := params[key](value):
            return f"{what} {node.name!r}: {key} {reason}"
    if node.name == "truncate":  # jinja asserts length >= len(end): an AssertionError
        length = given.get("length")
        end = given.get("end")
        n = length.value if isinstance(length, nodes.Const) else 255
        end_len = len(end.value) if isinstance(end, nodes.Const) else 3
        if n < end_len:
            return f"filter 'truncate': length must be at least {end_len} (its end marker), got {n}"
    return None


class _TextSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus a bound on ``*`` (the one operator that can multiply sizes)."""

    intercepted_binops = frozenset({"*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for value, n in ((left, right), (right, left)):
                if not isinstance(n, int):
                    continue
                if isinstance(value, str | list | tuple) and len(value) * n > MAX_OUTPUT:
                    raise SecurityError("repetition too large")
                if isinstance(value, int) and value.bit_length() + n.bit_length() > 64:
                    raise SecurityError("number too large")
        return super().call_binop(context, operator, left, right)


# No loader: `{% include %}` and `{% import %}` cannot reach any file.
_ENV = _TextSandbox(
    loader=None,
    autoescape=False,  # the output goes into JSON and pass.strings, not HTML
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
)
# No globals: range, dict, lipsum, cycler, joiner and namespace are not documented variables, and
# `{{ range }}` printed "<function safe_range at 0x…>" (an address).
_ENV.globals.clear()


def _bracket_depth(source: str) -> int:
    depth = deepest = 0
    for ch in source:
        if ch in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]" and depth:
            depth -= 1
    return deepest


def _check_syntax(tree: nodes.Node) -> frozenset[str]:
    """Check every node; return the variable names the text reads."""
    names: set[str] = set()
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:  # iterative: the tree may be deep
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TextTemplateError(f"text template nested too deeply (more than {MAX_DEPTH})")
        if not isinstance(node, _ALLOWED_NODES):
            raise TextTemplateError(
                f"text templates may not use {type(node).__name__.lower()} "
                "(allowed: {{ variable }}, {% if %}, arithmetic, comparisons and simple filters)"
            )
        if isinstance(node, nodes.Filter | nodes.Test) and (reason := _check_arguments(node)):
            raise TextTemplateError(reason)
        if isinstance(node, nodes.Name):
            if node.name in _RESERVED_NAMES or node.name.startswith("_"):
                raise TextTemplateError(f"unknown variable {node.name!r}")
            names.add(node.name)
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return frozenset(names)


class _Compiled(NamedTuple):
    template: jinja2.Template
    names: frozenset[str]


@lru_cache(maxsize=1024)
def _compile(source: str) -> _Compiled:
    if len(source) > MAX_SOURCE:
        raise TextTemplateError(f"text template longer than {MAX_SOURCE} characters")
    if "{" in source and _bracket_depth(source) > MAX_BRACKETS:  # plain prose may nest freely
        raise TextTemplateError(
            f"text template nested too deeply (more than {MAX_BRACKETS} brackets)"
        )
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TextTemplateError(
            f"text template syntax error: {exc.message} (line {exc.lineno})"
        ) from exc
    except RecursionError:  # e.g. 600 x `not`: jinja's parser recurses per operator
        raise TextTemplateError("text template nested too deeply") from None
    names = _check_syntax(tree)
    try:
        return _Compiled(_ENV.from_string(tree), names)
    except jinja2.TemplateError as exc:  # e.g. TemplateAssertionError for an unknown test
        raise TextTemplateError(f"text template invalid: {exc}") from exc


def check_text_template(source: str, *, variables: frozenset[str] | None = None) -> str | None:
    """Return a reason when ``source`` is not an acceptable text template, else ``None``.

    With ``variables``, every variable the text reads must be one of them (a template's texts
    are checked against :data:`TEXT_VARIABLES`, so a typo is caught when the template loads)."""
    try:
        compiled = _compile(source)
    except TextTemplateError as exc:
        return str(exc)
    if variables is not None and (unknown := sorted(compiled.names - variables)):
        known = ", ".join(sorted(variables))
        return f"unknown variable {unknown[0]!r} (known: {known})"
    return None


def render_text(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context`` in the sandbox.

    Plain strings without template markup are returned as they are (the common, fast case).
    Every failure is a :class:`TextTemplateError`."""
    if "{" not in source:
        return source
    template = _compile(source).template
    try:
        out = template.render(context)
    except SecurityError as exc:
        raise TextTemplateError(f"text template refused by the sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TextTemplateError(f"text template failed: {exc}") from exc
    except RecursionError:
        raise TextTemplateError("text template nested too deeply") from None
    except Exception as exc:  # any filter failure is the text's, never a 500
        raise TextTemplateError(f"text template failed: {type(exc).__name__}: {exc}") from exc
    if len(out) > MAX_OUTPUT:
        raise TextTemplateError(f"text template output longer than {MAX_OUTPUT} characters")
    return out


_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()
_MAX_LOGGED = 4096


def render_text_or(source: str, context: Mapping[str, Any], *, fallback: str, field: str) -> str:
    """Render like :func:`render_text`, but give ``fallback`` when the text fails.

    For serving: a text that slipped past the checks at publishing (or was stored before them)
    must not turn a pass, an object or a page into an error. Each (field, text) failure is
    logged once per process, without the card's values."""
    try:
        return render_text(source, context)
    except TextTemplateError as exc:
        key = (field, source)
        with _logged_lock:
            first = key not in _logged and len(_logged) < _MAX_LOGGED
            if first:
                _logged.add(key)
        if first:
            # The card's values (a holder's name) stay out of the log, should a message hold one.
            reason = str(exc)
            for value in context.values():
                if isinstance(value, str) and len(value) >= 3:
                    reason = reason.replace(value, "…")
            _log.warning("text %s failed, shown as its fallback: %s", field, reason)
        return fallback
