"""The CLI's one error policy: one line, bullets folded, option names intact."""

from __future__ import annotations

from passkit_stamps.cli import one_line
from passkit_stamps.errors import InvalidPassError, WebConfigError


def test_bullets_are_folded_into_one_line() -> None:
    exc = InvalidPassError(["manifest.json: missing", "signature: not DER"])
    assert one_line(exc) == "invalid pass: manifest.json: missing; signature: not DER"


def test_option_names_keep_their_dashes() -> None:
    assert one_line(WebConfigError("--secret-key is required")) == "--secret-key is required"
