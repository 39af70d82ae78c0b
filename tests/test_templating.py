"""Merchant texts render in jinja2's sandbox: variables work, nothing else is reachable."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passkit_stamps.errors import PasskitStampsError, TextTemplateError
from passkit_stamps.model import Card, CardTemplate, Holder, text_context
from passkit_stamps.templating import (
    MAX_OUTPUT,
    MAX_SOURCE,
    TEXT_VARIABLES,
    check_text_template,
    render_text,
    render_text_or,
)

CONTEXT = {"stamps": 3, "required": 8, "remaining": 5, "next_reward": "Free coffee", "items": [1]}


def card(template: CardTemplate, stamps: int, name: str | None = "Ada") -> Card:
    return Card(
        serial="113772",
        template_id=template.id,
        template_version=template.version,
        holder=Holder(name=name),
        stamps=stamps,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        authentication_token="t" * 32,
    )


# -- what merchants write -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ stamps }} / {{ required }}", "3 / 8"),
        ("{{ next_reward }} in {{ remaining }}", "Free coffee in 5"),
        ("{{ 'stamp' if remaining == 1 else 'stamps' }}", "stamps"),
        (
            "{% if stamps >= required %}Done{% else %}{{ required - stamps }} to go{% endif %}",
            "5 to go",
        ),
        ("{{ next_reward | upper }}", "FREE COFFEE"),
        ("{{ (100 * stamps / required) | round | int }}%", "38%"),
        ("{{ '-' * 10 }}", "----------"),
        ("{{ nothing | default('none') }}", "none"),
    ],
)
def test_variables_and_expressions_render(source: str, expected: str) -> None:
    assert render_text(source, CONTEXT) == expected


def test_plain_text_is_returned_untouched() -> None:
    text = "Show this card at the till."
    assert render_text(text, {}) is text


def test_sample_texts_render_with_a_cards_context(
    coffee: CardTemplate, salon: CardTemplate
) -> None:
    ctx = text_context(coffee, card(coffee, 7))
    assert render_text(coffee.label("next_reward_value"), ctx) == "Free coffee in 1 stamp"
    assert render_text(coffee.label("progress_value"), ctx) == "7 / 8"
    ctx_de = text_context(salon, card(salon, 3), "de")
    assert render_text(salon.label("next_reward_value", "de"), ctx_de) == "Gratis Haarkur in 2"
    assert render_text(salon.label("progress_value", "de"), ctx_de) == "3 von 10"


# -- what the sandbox refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ self._TemplateReference__context }}",
        "{{ self.__init__.__globals__ }}",
        "{{ stamps.__class__ }}",
        "{{ next_reward|attr('__class__') }}",
        "{{ '{0.__class__}'.format(stamps) }}",
        "{{ dict.mro() }}",
        "{{ items.append(2) }}",
        "{{ items.pop() }}",
        "{{ config }}",
        "{{ request.environ }}",
    ],
)
def test_python_internals_are_out_of_reach(source: str) -> None:
    with pytest.raises(TextTemplateError):
        render_text(source, CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{% include '/etc/passwd' %}",
        "{% include 'template.toml' %}",
        "{% import '/etc/passwd' as p %}{{ p }}",
        "{% from '/etc/hosts' import x %}{{ x }}",
        "{% extends '/etc/passwd' %}",
    ],
)
def test_no_file_system(source: str) -> None:
    with pytest.raises(TextTemplateError):
        render_text(source, CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 100000000 }}",
        "{{ 100000000 * 'a' }}",
        "{{ [1] * 100000000 }}",
        "{{ (next_reward ~ next_reward) * 1000 }}",
        "{{ 9 ** 999999 }}",
        "{{ 9 ** -999999 }}",
        "{{ range(100000000) | list | length }}",
    ],
)
def test_resource_exhaustion_is_refused(source: str) -> None:
    with pytest.raises(TextTemplateError, match=r"sandbox|too large|may not use|not allowed"):
        render_text(source, CONTEXT)


@pytest.mark.parametrize("source", ["{{ missing }}", "{{ missing.attr }}", "{{ stamps.nope }}"])
def test_undefined_variables_raise(source: str) -> None:
    with pytest.raises(TextTemplateError, match=r"undefined|may not use getattr"):
        render_text(source, CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 1500 }}{{ 'b' * 1500 }}",
        "{{ next_reward ~ (next_reward * 150) ~ (next_reward * 150) }}",
    ],
)
def test_long_output_is_refused(source: str) -> None:
    with pytest.raises(TextTemplateError, match=f"longer than {MAX_OUTPUT}"):
        render_text(source, CONTEXT)


def test_output_at_the_limit_is_fine() -> None:
    assert len(render_text(f"{{{{ 'a' * {MAX_OUTPUT} }}}}", {})) == MAX_OUTPUT


def test_long_source_is_refused() -> None:
    source = "{{ stamps }}" + "x" * MAX_SOURCE
    with pytest.raises(TextTemplateError, match=f"longer than {MAX_SOURCE}"):
        render_text(source, CONTEXT)
    assert check_text_template(source) is not None


def test_runtime_errors_become_text_template_errors() -> None:
    for source in ("{{ 1 / 0 }}", "{{ 'a' + 1 }}", "{{ 10 // (stamps - 3) }}"):
        with pytest.raises(TextTemplateError):
            render_text(source, CONTEXT)


def test_syntax_errors_are_reported_by_check_and_render() -> None:
    assert check_text_template("{{ stamps }}") is None
    reason = check_text_template("{{ stamps ")
    assert reason is not None and "syntax error" in reason
    with pytest.raises(TextTemplateError, match="syntax error"):
        render_text("{% if %}", CONTEXT)


def test_errors_belong_to_the_library_hierarchy() -> None:
    assert issubclass(TextTemplateError, PasskitStampsError)


# -- known gaps ---------------------------------------------------------------------------------
# Bounds are checked on `*` and `**` results of sequences and on the final output only. These
# cases build large intermediate values the output check sees too late; the sizes here are kept
# small so the tests stay fast, but the same shapes with more steps exhaust memory or CPU.


def test_concatenation_doubling_is_refused() -> None:
    source = "{% set a = 'a' * 1000 %}" + "{% set a = a ~ a %}" * 10 + "{{ a | length }}"
    with pytest.raises(TextTemplateError):
        render_text(source, {})


def test_integer_squaring_is_refused() -> None:
    source = "{% set a = 9 ** 64 %}" + "{% set a = a * a %}" * 8 + "{{ a > 1 }}"
    with pytest.raises(TextTemplateError):
        render_text(source, {})


def test_format_width_is_refused() -> None:
    with pytest.raises(TextTemplateError):
        render_text("{{ ('%99999d' % 1) | length }}", {})


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("{% set a = 1 %}{{ a }}", "assign"),
        ("{% for i in range(3) %}{{ i }}{% endfor %}", "for"),
        ("{{ holder_name.upper() }}", "call"),
        ("{{ holder_name.__class__ }}", "getattr"),
        ("{{ holder_name[0] }}", "getitem"),
        ("{{ 2 ** 8 }}", "pow"),
        ("{{ 7 % 2 }}", "mod"),
        ("{% macro m() %}x{% endmacro %}", "macro"),
        ("{{ holder_name | format(1) }}", "'format' is not allowed"),
        ("{{ holder_name | center(99999) }}", "'center' is not allowed"),
    ],
)
def test_only_substitution_syntax_is_accepted(source: str, refused: str) -> None:
    with pytest.raises(TextTemplateError, match=refused):
        render_text(source, {"holder_name": "Ada"})


def test_allowed_syntax_renders() -> None:
    source = (
        "{% if remaining == 1 %}One more{% else %}{{ remaining }} more{% endif %}"
        " for {{ next_reward | upper }} ({{ stamps * 100 // required }}%)"
        "{{ ' - ' ~ holder_name if holder_name is defined else '' }}"
    )
    context = {"remaining": 3, "next_reward": "coffee", "stamps": 5, "required": 8,
               "holder_name": "Ada"}  # fmt: skip
    assert render_text(source, context) == "3 more for COFFEE (62%) - Ada"


def test_large_integer_products_are_refused() -> None:
    with pytest.raises(TextTemplateError, match="number too large"):
        render_text("{{ 99999999999 * 99999999999 }}", {})


# -- issue 12: texts that passed publishing and broke every card ---------------------------------


def test_truncate_below_its_end_marker_is_refused_not_an_assertion_error() -> None:
    # jinja's truncate asserts length >= len(end) + leeway: it raised AssertionError at serving
    with pytest.raises(TextTemplateError, match=r"truncate.*length"):
        render_text("{{ holder_name|truncate(1) }}", {"holder_name": "Ada"})
    reason = check_text_template("{{ holder_name|truncate(1) }}")
    assert reason is not None and "truncate" in reason


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("{{ holder_name|truncate(99999) }}", "truncate"),
        ("{{ holder_name|truncate(10, end='x' * 3) }}", "constant"),
        ("{{ holder_name|truncate(10, nope=1) }}", "nope"),
        ("{{ stamps|round(99) }}", "round"),
        ("{{ stamps|round(1, 'sideways') }}", "round"),
        ("{{ holder_name|upper(1) }}", "upper"),
        ("{{ holder_name|int(0, 99) }}", "int"),
        ("{{ stamps is divisibleby(0) }}", "divisibleby"),
        ("{{ stamps is sameas(1) }}", "sameas"),
    ],
)
def test_filter_and_test_arguments_are_whitelisted_with_bounds(source: str, refused: str) -> None:
    reason = check_text_template(source)
    assert reason is not None and refused in reason


@pytest.mark.parametrize(
    "source", ["{{ holder_name|truncate(5) }}", "{{ holder_name|truncate(5, true, '.') }}",
               "{{ stamps|round(1, 'floor') }}", "{{ stamps is divisibleby(2) }}"],
)  # fmt: skip
def test_bounded_filter_arguments_are_fine(source: str) -> None:
    assert check_text_template(source) is None
    render_text(source, {"holder_name": "Ada Lovelace", "stamps": 3})


def test_only_documented_variables_when_asked() -> None:
    reason = check_text_template("{{ remainig }}", variables=TEXT_VARIABLES)
    assert reason is not None and "remainig" in reason and "remaining" in reason
    source = "{{ remaining }} of {{ required }}"
    assert check_text_template(source, variables=TEXT_VARIABLES) is None


@pytest.mark.parametrize(
    "name", ["range", "dict", "lipsum", "cycler", "joiner", "namespace", "self"]
)
def test_no_jinja_global_is_exposed(name: str) -> None:
    # `{{ range }}` rendered "<function safe_range at 0x…>": an address and an undocumented name
    with pytest.raises(TextTemplateError):
        render_text(f"{{{{ {name} }}}}", {})
    source = f"{{{{ {name} }}}}"
    assert check_text_template(source, variables=TEXT_VARIABLES) is not None


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "x|default(" * 150 + "1" + ")" * 150 + " }}",
        "{{ " + "not " * 600 + "1 }}",
        "{{ " + "-" * 900 + "1 }}",
        "{{ " + "1 + " * 480 + "1 }}",
        "{% if 1 %}" * 300 + "x" + "{% endif %}" * 300,
    ],
)
def test_deep_nesting_is_one_text_template_error(source: str) -> None:
    # printed a 3,000-line RecursionError traceback from `templates publish`
    reason = check_text_template(source[:MAX_SOURCE])
    assert reason is not None
    with pytest.raises(TextTemplateError):
        render_text(source[:MAX_SOURCE], {"x": 1})


def test_render_text_or_falls_back_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    broken = "{{ 1 / (stamps - 3) }}"
    for _ in range(3):
        assert render_text_or(broken, {"stamps": 3}, fallback="-", field="texts.en.x") == "-"
    assert render_text_or(broken, {"stamps": 4}, fallback="-", field="texts.en.x") == "1.0"
    warnings = [r for r in caplog.records if "texts.en.x" in r.getMessage()]
    assert len(warnings) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"\{\{[ a-z_|()'0-9,.+*/-]{0,40}\}\}", fullmatch=True))
def test_any_text_gives_a_reason_or_renders_or_raises_a_library_error(source: str) -> None:
    context = {"stamps": 3, "required": 8, "holder_name": "Ada", "x": 1}
    reason = check_text_template(source)
    assert reason is None or isinstance(reason, str)
    with contextlib.suppress(TextTemplateError):
        render_text(source, context)


def test_the_fallback_log_line_holds_no_card_values(caplog: pytest.LogCaptureFixture) -> None:
    # int('Ada Lovelace') fails with the holder's name in the message: it must not be logged
    text = "{{ holder_name|int(0, 16) + 1 }}{{ 1 // (stamps - 3) }}"
    render_text_or(text, {"holder_name": "Ada Lovelace", "stamps": 3}, fallback="", field="f.x")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "f.x" in logged and "ZeroDivisionError" in logged
    assert "Ada" not in logged
    render_text_or("{{ secret }}", {}, fallback="", field="f.y")
    assert "'secret' is undefined" in " ".join(r.getMessage() for r in caplog.records)


def test_plain_prose_may_nest_brackets() -> None:
    prose = "(" * 20 + "see terms" + ")" * 20
    assert check_text_template(prose) is None
    assert render_text(prose, {}) == prose
