"""User-supplied text templates, rendered in jinja2's sandbox.

Merchants write the texts shown on a pass ("{{ stamps }} / {{ required }}"). Those strings are
untrusted. Two layers keep them harmless:

1. A whitelist of template syntax. Pass texts need substitutions, conditions and a few filters,
   not programs: no ``{% set %}``, loops, macros, calls, attribute or item access, ``%``/``**``
   operators, includes or imports. Without assignment or loops nothing can grow by iteration, so
   output size and work are bounded by the (bounded) source.
2. jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` underneath, with no loader (no
   file system access), should anything slip past the whitelist.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TextTemplateError

# A text on a pass is short; bound what one render can produce.
MAX_OUTPUT = 2_000
MAX_SOURCE = 2_000

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
#: Filters whose output is bounded by their input.
_ALLOWED_FILTERS = frozenset(
    {
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "default",
        "d",
        "string",
        "int",
        "round",
        "abs",
        "length",
        "count",
        "truncate",
    }
)


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


def _check_syntax(tree: nodes.Node) -> None:
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, _ALLOWED_NODES):
            raise TextTemplateError(
                f"text templates may not use {type(node).__name__.lower()} "
                "(allowed: {{ variable }}, {% if %}, arithmetic, comparisons and simple filters)"
            )
        if isinstance(node, nodes.Filter | nodes.Test) and node.name.startswith("_"):
            raise TextTemplateError(f"unknown filter {node.name!r}")
        if isinstance(node, nodes.Filter) and node.name not in _ALLOWED_FILTERS:
            allowed = ", ".join(sorted(_ALLOWED_FILTERS))
            raise TextTemplateError(f"filter {node.name!r} is not allowed (allowed: {allowed})")


@lru_cache(maxsize=1024)
def _compile(source: str) -> jinja2.Template:
    if len(source) > MAX_SOURCE:
        raise TextTemplateError(f"text template longer than {MAX_SOURCE} characters")
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TextTemplateError(
            f"text template syntax error: {exc.message} (line {exc.lineno})"
        ) from exc
    _check_syntax(tree)
    return _ENV.from_string(tree)


def check_text_template(source: str) -> str | None:
    """Return a reason when ``source`` is not an acceptable text template, else ``None``."""
    try:
        _compile(source)
    except TextTemplateError as exc:
        return str(exc)
    return None


def render_text(source: str, context: Mapping[str, Any]) -> str:
    """Render ``source`` with ``context`` in the sandbox.

    Plain strings without template markup are returned as they are (the common, fast case).
    """
    if "{" not in source:
        return source
    template = _compile(source)
    try:
        out = template.render(context)
    except SecurityError as exc:
        raise TextTemplateError(f"text template refused by the sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TextTemplateError(f"text template failed: {exc}") from exc
    except (ArithmeticError, TypeError, ValueError, OverflowError) as exc:
        raise TextTemplateError(f"text template failed: {exc}") from exc
    if len(out) > MAX_OUTPUT:
        raise TextTemplateError(f"text template output longer than {MAX_OUTPUT} characters")
    return out
