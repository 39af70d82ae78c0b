"""``json.loads`` for untrusted request bodies, with bounds checked before and while parsing.

The standard parser recurses once per nesting level (``[`` × 8,000 raises ``RecursionError``),
turns an integer of any length into an ``int`` (over 4,300 digits it raises a bare
``ValueError``, and below that it costs quadratic time) and accepts ``NaN``/``Infinity``. Here:

* the nesting depth is measured by a cheap scan before parsing (string contents do not count);
* integers are limited in digits and floats must be finite;
* every refusal is a :class:`JSONLimitError` (a ``ValueError``) saying which bound was hit, for
  the caller to turn into its own typed error.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

#: Request bodies here are flat (``{"logs": [...]}``, a callback envelope): 32 levels is plenty.
MAX_DEPTH = 32
#: A millisecond timestamp has 13 digits; nothing a client sends needs more than 40.
MAX_INT_DIGITS = 40
#: Longer float literals are refused before ``float()`` reads them.
MAX_FLOAT_CHARS = 64


class JSONLimitError(ValueError):
    """A document that is (or would be) refused by a bound, not only by JSON syntax."""


# One JSON string literal, or an unterminated one up to the end: every match attempt that starts
# at a quote succeeds (possessive, no backtracking), so the scan is linear even for bodies full
# of escaped quotes (a plain `"..."` pattern retries from each of them: quadratic).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of ``text`` (outside string literals); for malformed JSON an
    upper bound of what the parser would recurse into."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, map(ord, brackets))), default=0)


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_FLOAT_CHARS:
        raise JSONLimitError(f"number longer than {MAX_FLOAT_CHARS} characters")
    value = float(literal)
    if not math.isfinite(value):
        raise JSONLimitError("number out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not JSON")


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` as strict JSON within the bounds above.

    Raises :class:`JSONLimitError` for a bound and ``json.JSONDecodeError`` for bad syntax
    (both ``ValueError``).
    """
    # Fast path: with few opening brackets anywhere the nesting cannot be deep.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise JSONLimitError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except RecursionError:  # unreachable after the scan; never let it become a 500
        raise JSONLimitError(f"nested deeper than {max_depth} levels") from None
