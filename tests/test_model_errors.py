"""The public models raise the library's typed errors, naming the field and the rule: never a
bare ValueError/TypeError or a pydantic ValidationError (issue 8)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passkit_stamps.errors import (
    CardInputError,
    GoogleConfigError,
    GoogleWalletError,
    PasskitStampsError,
    TemplateError,
)
from passkit_stamps.model import (
    Card,
    CardTemplate,
    Color,
    Design,
    ExpiryRule,
    Holder,
    Limits,
    Link,
    RewardStep,
    TemplateTexts,
    Voucher,
    parse_color,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_201_character_holder_name_is_a_card_input_error() -> None:
    with pytest.raises(CardInputError) as info:
        Holder(name="x" * 201)
    assert isinstance(info.value, PasskitStampsError)
    assert "name" in str(info.value) and "200 characters" in str(info.value)
    assert [p.place for p in info.value.problems] == ["name"]


def test_every_problem_is_listed() -> None:
    with pytest.raises(CardInputError) as info:
        Holder(name="x" * 201, email="not an address", phone="call me")
    assert [p.place for p in info.value.problems] == ["name", "email", "phone"]


def test_card_problems_name_nested_fields() -> None:
    with pytest.raises(CardInputError) as info:
        Card(
            serial="bad serial!",
            template_id="coffee",
            template_version=1,
            holder={"name": "x" * 201},
            created_at=NOW,
            authentication_token="short",
        )
    places = [p.place for p in info.value.problems]
    assert places == ["serial", "holder.name", "authentication_token"]


def test_model_validate_and_json_raise_library_errors() -> None:
    with pytest.raises(CardInputError, match="code"):
        Voucher.model_validate({"code": "x", "kind": "reward", "title": "T", "issued_at": NOW})
    with pytest.raises(CardInputError, match="name"):
        Holder.model_validate_json('{"name": 5}')
    with pytest.raises(CardInputError, match="JSON"):
        Holder.model_validate_json("{")


def test_positional_arguments_are_a_library_error() -> None:
    with pytest.raises(CardInputError, match="keyword"):
        Holder("Ada")  # type: ignore[misc]


def test_template_parts_raise_template_errors(coffee: CardTemplate) -> None:
    with pytest.raises(TemplateError, match=r"at: Input should be greater than or equal to 1"):
        RewardStep(at=0, title="x")
    with pytest.raises(TemplateError, match="days"):
        ExpiryRule(kind="days_after_issue")
    with pytest.raises(TemplateError, match="url"):
        Link(title="x", url="ftp://x")
    with pytest.raises(TemplateError, match="max_stamps_per_visit"):
        Limits(max_stamps_per_visit=0)
    with pytest.raises(TemplateError, match="terms"):
        TemplateTexts(how_to_earn="x")
    with pytest.raises(TemplateError, match=r"background_color: invalid colour"):
        Design.model_validate({**coffee.design.model_dump(), "background_color": "brown"})
    with pytest.raises(TemplateError, match=r"template.toml: stamps_required"):
        CardTemplate.model_validate({**coffee.model_dump(), "stamps_required": 99})


@pytest.mark.parametrize(
    "args", [(256, 0, 0), (-1, 0, 0), ("a", 0, 0), (True, 0, 0), (1.5, 0, 0), (None, 0, 0)]
)
def test_color_checks_its_channels(args: tuple[Any, ...]) -> None:
    with pytest.raises(TemplateError, match="colour"):
        Color(*args)


@pytest.mark.parametrize("value", ["brown", "#12345", [1, 2], [None, 1, 2], ["a", 1, 2], 7])
def test_parse_color_raises_a_template_error(value: Any) -> None:
    with pytest.raises(TemplateError, match="colour"):
        parse_color(value)


def test_color_still_works() -> None:
    assert Color(1, 2, 3).hex() == "#010203" and parse_color("rgb(1, 2, 3)") == Color(1, 2, 3)
    assert Color(1, 2, 3) == (1, 2, 3)


def test_google_config_error_is_a_google_wallet_error() -> None:
    assert issubclass(GoogleConfigError, GoogleWalletError)
    assert str(GoogleConfigError("bad issuer id")) == "bad issuer id"


# -- random junk into every public constructor: only library errors ----------------------------

JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | st.datetimes(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
MODELS: list[type[Any]] = [
    Holder,
    Voucher,
    Card,
    RewardStep,
    ExpiryRule,
    Limits,
    Link,
    TemplateTexts,
    Design,
    CardTemplate,
]


def _fields(model: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = list(model.model_fields)
    return st.dictionaries(st.sampled_from([*names, "junk"]), JUNK, max_size=len(names) + 1)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_junk_into_constructors_raises_only_library_errors(model: type[Any], data: Any) -> None:
    kwargs = data.draw(_fields(model))
    with contextlib.suppress(PasskitStampsError):
        model(**kwargs)
    with contextlib.suppress(PasskitStampsError):
        model.model_validate(kwargs)


@settings(max_examples=100, deadline=None)
@given(args=st.lists(JUNK, min_size=0, max_size=4))
def test_junk_into_color_raises_only_library_errors(args: list[Any]) -> None:
    for call in (lambda: Color(*args), lambda: parse_color(args), lambda: parse_color(args[:1])):
        with contextlib.suppress(PasskitStampsError):
            call()


@pytest.mark.parametrize("raw", [5, None, "id = 1", [("id", "x")]])
def test_from_mapping_of_a_non_mapping_is_a_template_error(raw: Any) -> None:
    with pytest.raises(TemplateError, match="table"):
        CardTemplate.from_mapping(raw)


@pytest.mark.parametrize("path", [5, None, b"\0"])
def test_load_of_a_non_path_is_a_template_error(path: Any) -> None:
    with pytest.raises(TemplateError):
        CardTemplate.load(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_junk_in_any_part_of_a_template_mapping_is_a_template_error(
    coffee: CardTemplate, data: Any
) -> None:
    raw: dict[str, Any] = coffee.model_dump()
    section = data.draw(st.sampled_from([None, "design", "texts", "rewards", "expiry", "limits"]))
    key = data.draw(st.sampled_from([*raw, "junk"]))
    junk = data.draw(JUNK)
    if section is None:
        raw[key] = junk
    elif isinstance(raw[section], dict):
        inner = data.draw(st.sampled_from([*raw[section], "junk"]))
        raw[section] = {**raw[section], inner: junk}
    else:
        raw[section] = junk
    with contextlib.suppress(TemplateError):
        CardTemplate.from_mapping(raw)
