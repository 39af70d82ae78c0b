"""User-supplied text templates, rendered in jinja2's sandbox.

Merchants write the texts shown on a pass ("{{ stamps }} / {{ required }}"). Those strings are
untrusted: they are compiled in a :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`, which
refuses attribute access to Python internals, has no loader (so no file system access) and cannot
mutate the values it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TextTemplateError

# A text on a pass is short; bound what one render can produce.
MAX_OUTPUT = 2_000
MAX_SOURCE = 2_000


class _TextSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on `*` and `**` so a template cannot exhaust memory or CPU."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_OUTPUT
                ):
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


# No loader: `{% include %}` and `{% import %}` cannot reach any file.
_ENV = _TextSandbox(
    loader=None,
    autoescape=False,  # the output goes into JSON and pass.strings, not HTML
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=False,
)


@lru_cache(maxsize=1024)
def _compile(source: str) -> jinja2.Template:
    if len(source) > MAX_SOURCE:
        raise TextTemplateError(f"text template longer than {MAX_SOURCE} characters")
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TextTemplateError(
            f"text template syntax error: {exc.message} (line {exc.lineno})"
        ) from exc


def check_text_template(source: str) -> str | None:
    """Return a reason when ``source`` does not compile, else ``None``."""
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
