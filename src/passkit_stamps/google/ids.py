"""Google Wallet resource ids.

Google allows only ``[A-Za-z0-9._-]`` in the suffix of ``<issuerId>.<suffix>`` and no dots in
text-module ids (card templates reference them by path). Our template ids and serials are usually
already safe, so the mapping keeps safe characters as they are and escapes the rest, with ``_`` as
the escape character: ``_`` itself becomes ``__`` and any other character becomes ``_`` plus the
lowercase hex of each of its UTF-8 bytes (``"é"`` -> ``_c3_a9``). Because an escape always starts
with ``_`` and a literal ``_`` is always doubled, decoding is unambiguous, so two different inputs
never map to the same id (tested exhaustively on a small alphabet and on random strings).
"""

from __future__ import annotations

import re
import string

from ..errors import GoogleConfigError

ESCAPE = "_"
#: Characters Google accepts in an id suffix (besides the escape character itself).
ID_SAFE = frozenset(string.ascii_letters + string.digits + ".-")
#: Text-module ids may not contain dots.
MODULE_SAFE = frozenset(string.ascii_letters + string.digits + "-")

_ISSUER_ID = re.compile(r"[0-9]{1,19}")
_RESOURCE_ID = re.compile(r"[0-9]{1,19}\.[A-Za-z0-9._-]+")


def escape(text: str, safe: frozenset[str] = ID_SAFE) -> str:
    """Map ``text`` to the characters Google allows, deterministically and injectively."""
    if all(c in safe for c in text):  # the common case: nothing to escape
        return text
    out: list[str] = []
    for c in text:
        if c in safe:
            out.append(c)
        elif c == ESCAPE:
            out.append(ESCAPE * 2)
        else:
            out.extend(f"{ESCAPE}{b:02x}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def unescape(text: str) -> str:
    """The inverse of :func:`escape` (for reading ids back, e.g. from callbacks)."""
    if ESCAPE not in text:
        return text
    raw = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != ESCAPE:
            raw.extend(c.encode())
            i += 1
        elif text[i + 1 : i + 2] == ESCAPE:
            raw.extend(ESCAPE.encode())
            i += 2
        else:
            hexpair = text[i + 1 : i + 3]
            if len(hexpair) != 2 or any(h not in "0123456789abcdef" for h in hexpair):
                raise ValueError(f"not an escaped id: bad escape at {i} in {text!r}")
            raw.append(int(hexpair, 16))
            i += 3
    return raw.decode("utf-8", "surrogatepass")


def check_issuer_id(issuer_id: str) -> str:
    """Return ``issuer_id`` if it looks like a Google issuer id (digits), else raise."""
    if not isinstance(issuer_id, str) or not _ISSUER_ID.fullmatch(issuer_id):
        raise GoogleConfigError(
            f"invalid Google issuer id {issuer_id!r}: use the number from the Google Pay & "
            "Wallet Console (digits only)"
        )
    return issuer_id


def class_id(issuer_id: str, template_id: str) -> str:
    """``<issuerId>.<template id>``: one class per template, shared by all of its versions."""
    return f"{check_issuer_id(issuer_id)}.{escape(template_id)}"


def object_id(issuer_id: str, serial: str) -> str:
    """``<issuerId>.<serial>``: one object per card."""
    return f"{check_issuer_id(issuer_id)}.{escape(serial)}"


def module_id(name: str) -> str:
    """A text/link module id: like a suffix, but without dots."""
    return escape(name, MODULE_SAFE)


def is_valid_resource_id(value: str) -> bool:
    """Whether ``value`` has the shape ``<digits>.<[A-Za-z0-9._-]+>``."""
    return bool(_RESOURCE_ID.fullmatch(value))
