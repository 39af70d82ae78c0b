"""Property-based tests for every request parser in ``passkit_stamps.web.requests``: whatever a
client sends, a parser returns a well-formed value or raises ``RequestError`` (a 4xx), never
another exception (a 500)."""

from __future__ import annotations

import contextlib
import json
import string
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passkit_stamps import _boundedjson as boundedjson
from passkit_stamps.errors import RequestError, RequestTooLargeError
from passkit_stamps.web import requests as rq

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON document (small), as Python values.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def deep_json(kind: str, depth: int) -> bytes:
    """The bodies of the report: ``[``×n ``]``×n, ``{"a":``×n ..., and mixes."""
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "unclosed":
        return b'{"logs": ' + b"[" * depth
    return b'{"logs": ["' + b"[" * depth + b'"], "x": ' + b"[{" * depth + b"}]" * depth + b"}"


# -- the defects of the report (written first) --------------------------------------------------


def test_a_5000_digit_integer_in_a_log_body_is_a_request_error() -> None:
    body = b'{"logs": [' + b"1" * 5000 + b"]}"
    with pytest.raises(RequestError, match="integer"):
        rq.log_messages(body)
    with pytest.raises(RequestError, match="integer"):
        rq.register_push_token(b'{"pushToken": ' + b"9" * 5000 + b"}")


@pytest.mark.parametrize("kind", ["arrays", "objects", "unclosed", "mixed"])
@pytest.mark.parametrize("depth", [33, 2_500, 8_000, 60_000])
def test_deeply_nested_bodies_are_request_errors(kind: str, depth: int) -> None:
    body = deep_json(kind, depth)
    for parse in (rq.log_messages, rq.register_push_token):
        with pytest.raises(RequestError, match="not valid JSON"):
            parse(body)


def test_nesting_inside_strings_does_not_count() -> None:
    body = json.dumps({"logs": ["[" * 5000 + "{" * 5000, 'quote \\" [[[', "]]]"]}).encode()
    assert rq.log_messages(body)[2] == "]]]"


def test_modest_nesting_is_parsed() -> None:
    body = b'{"logs": ["ok"], "x": ' + b"[" * 30 + b"]" * 30 + b"}"
    assert rq.log_messages(body) == ["ok"]


@pytest.mark.parametrize(
    "literal", [b"1e400", b"-1e400", b"1" + b"0" * 400 + b".5", b"Infinity", b"NaN"]
)
def test_numbers_out_of_range_are_request_errors(literal: bytes) -> None:
    with pytest.raises(RequestError):
        rq.log_messages(b'{"logs": [], "n": ' + literal + b"}")


# -- properties ---------------------------------------------------------------------------------


def _body_strategies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["logs", "pushToken", "x"]), json_values, max_size=3).map(
            lambda v: json.dumps(v).encode()
        ),
        st.tuples(
            st.sampled_from(["arrays", "objects", "unclosed", "mixed"]),
            st.integers(0, 20_000),
        ).map(lambda t: deep_json(*t)),
        st.integers(0, 12_000).map(lambda n: b'{"logs": [' + b"7" * max(n, 1) + b"]}"),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


@FAST
@given(_body_strategies())
def test_register_body_is_a_token_or_a_request_error(body: bytes) -> None:
    try:
        token = rq.register_push_token(body)
    except RequestError:
        return
    assert 8 <= len(token) <= 512 and all(c in string.hexdigits for c in token)


@FAST
@given(_body_strategies())
def test_log_body_is_messages_or_a_request_error(body: bytes) -> None:
    try:
        messages = rq.log_messages(body)
    except RequestError:
        return
    assert all(isinstance(m, str) and len(m) <= rq.MAX_LOG_MESSAGE for m in messages)


@FAST
@given(st.lists(st.text(max_size=1_200), max_size=10))
def test_log_messages_round_trip(messages: list[str]) -> None:
    body = json.dumps({"logs": messages}).encode()
    parsed = rq.log_messages(body)
    assert len(parsed) == len(messages)
    for original, kept in zip(messages, parsed, strict=True):
        assert kept == original or (kept.endswith("…") and original.startswith(kept[:-1]))


@FAST
@given(st.text(max_size=300))
def test_path_parameters_are_values_or_request_errors(value: str) -> None:
    for parse in (rq.device_library_identifier, rq.serial_number, rq.updated_since_tag):
        with contextlib.suppress(RequestError):
            assert parse(value) == value
    assert isinstance(rq.is_pass_type_identifier(value), bool)


@FAST
@given(st.one_of(st.none(), st.text(max_size=400)))
def test_headers_never_raise(value: str | None) -> None:
    token = rq.apple_pass_token(value)
    assert token is None or (value is not None and value.endswith(token))
    since = rq.if_modified_since(value)
    assert since is None or (isinstance(since, datetime) and since.tzinfo is not None)
    assert rq.page_secret_valid(b"k" * 32, "113772", value or "") in (True, False)


@FAST
@given(
    st.lists(st.binary(max_size=2_000), max_size=8),
    st.one_of(st.none(), st.text(max_size=30), st.integers(-5, 10**30).map(str)),
    st.integers(0, 5_000),
)
async def test_read_body_is_bounded_or_refused(
    chunks: list[bytes], content_length: str | None, limit: int
) -> None:
    async def stream():  # type: ignore[no-untyped-def]
        for chunk in chunks:
            yield chunk

    try:
        body = await rq.read_body(stream(), limit, content_length=content_length)
    except RequestTooLargeError:
        assert sum(map(len, chunks)) > limit or content_length is not None
        return
    except RequestError:
        assert content_length is not None
        return
    assert body == b"".join(chunks) and len(body) <= limit


# -- the bounded JSON loader behind them ---------------------------------------------------------


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@FAST
@given(json_values)
def test_nesting_depth_is_the_documents_depth(value: object) -> None:
    assert boundedjson.nesting_depth(json.dumps(value)) == _depth(value)
    assert boundedjson.loads(json.dumps(value)) == value


@FAST
@given(st.text(alphabet='[]{}"\\,:a1 ', max_size=3_000))
def test_bounded_loads_only_raises_value_errors(text: str) -> None:
    with contextlib.suppress(ValueError):
        boundedjson.loads(text)


@pytest.mark.parametrize("header", ["¹", "²3", "٣", "1" * 19, "+1", " 1"])
async def test_a_content_length_of_non_ascii_digits_is_a_request_error(header: str) -> None:
    """Found by the property test: "¹" (a latin-1 header byte) passed str.isdigit()."""

    async def stream():  # type: ignore[no-untyped-def]
        yield b""

    with pytest.raises(RequestError, match="malformed Content-Length"):
        await rq.read_body(stream(), 10, content_length=header)
