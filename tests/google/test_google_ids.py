"""Id mapping: allowed characters only, deterministic, and never two inputs on one id."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from passkit_stamps.errors import GoogleConfigError
from passkit_stamps.google.ids import (
    class_id,
    escape,
    is_valid_resource_id,
    module_id,
    object_id,
    unescape,
)

SUFFIX = re.compile(r"[A-Za-z0-9._-]*")
MODULE = re.compile(r"[A-Za-z0-9_-]*")
# Safe characters, the escape character, characters that look like escapes, and unsafe ones.
ALPHABET = ["a", "Z", "0", "f", ".", "-", "_", "é", " ", "/", "💳", "\x00"]


def test_safe_strings_are_kept() -> None:
    assert escape("ABC-123.x") == "ABC-123.x"
    assert object_id("123", "113772") == "123.113772"
    assert class_id("123", "coffee") == "123.coffee"


def test_unsafe_characters_are_escaped() -> None:
    assert escape("a_b") == "a__b"
    assert escape("a b") == "a_20b"
    assert escape("é") == "_c3_a9"
    assert module_id("next.reward") == "next_2ereward"


def test_exhaustive_small_alphabet_is_injective_and_allowed() -> None:
    seen: dict[str, str] = {}
    module_seen: dict[str, str] = {}
    for n in range(5):
        for chars in itertools.product(ALPHABET, repeat=n):
            text = "".join(chars)
            out = escape(text)
            assert SUFFIX.fullmatch(out), (text, out)
            assert seen.setdefault(out, text) == text, f"{text!r} and {seen[out]!r} collide"
            assert unescape(out) == text
            mod = module_id(text)
            assert MODULE.fullmatch(mod) and "." not in mod
            assert module_seen.setdefault(mod, text) == text
            assert escape(text) == out  # deterministic
    assert len(seen) == sum(len(ALPHABET) ** n for n in range(5))


def test_many_random_strings_round_trip_without_collisions() -> None:
    rng = random.Random(20250301)
    pool = [chr(c) for c in range(32, 127)] + ["é", "ß", "中", "\U0001f600", "\t"]
    inputs = {"".join(rng.choices(pool, k=rng.randint(0, 24))) for _ in range(5000)}
    outputs = {escape(text) for text in inputs}
    assert len(outputs) == len(inputs)
    for text in inputs:
        assert SUFFIX.fullmatch(escape(text))
        assert unescape(escape(text)) == text
        assert is_valid_resource_id(object_id("42", text)) or text == ""


@pytest.mark.parametrize("issuer", ["", "12a", "-1", " 123", "1" * 20, "１２３"])
def test_bad_issuer_ids_are_refused(issuer: str) -> None:
    with pytest.raises(GoogleConfigError, match="issuer id"):
        object_id(issuer, "x")


@pytest.mark.parametrize("bad", ["_", "_4", "_zz", "a_g0"])
def test_unescape_refuses_malformed_escapes(bad: str) -> None:
    with pytest.raises(ValueError, match="bad escape"):
        unescape(bad)
