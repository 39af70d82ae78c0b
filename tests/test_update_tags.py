"""Apple's lastUpdated rules, shared by the service and the web app's direct reads."""

from __future__ import annotations

import pytest

from passkit_stamps.service import parse_update_tag, updated_serials_answer


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("42", 42),
        ("0", 0),
        (None, None),
        ("", None),
        ("-1", None),
        ("1e3", None),
        ("abc", None),
        ("9" * 19, None),
        ("٣", None),
    ],
)
def test_only_our_tags_are_read(tag: str | None, expected: int | None) -> None:
    assert parse_update_tag(tag) == expected


def test_answer_lists_serials_and_the_highest_tag_as_a_string() -> None:
    assert updated_serials_answer([("A", 7), ("B", 12)], "5") == (["A", "B"], "12")


def test_nothing_changed_hands_back_the_devices_own_tag() -> None:
    assert updated_serials_answer([], "5") == ([], "5")


@pytest.mark.parametrize("tag", [None, "not-ours"])
def test_nothing_registered_without_a_usable_tag_answers_zero(tag: str | None) -> None:
    assert updated_serials_answer([], tag) == ([], "0")
