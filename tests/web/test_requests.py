"""The strict request parsers: every accepted and refused form."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from passkit_stamps.errors import RequestError, RequestTooLargeError
from passkit_stamps.web import requests as rq

# -- path parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "0123456789abcdef0123456789abcdef", "A.b_c-d", "x" * 128])
def test_device_id_accepted(value: str) -> None:
    assert rq.device_library_identifier(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "a/b", "ä", "a%20", "a\x00", "a;b"])
def test_device_id_refused(value: str) -> None:
    with pytest.raises(RequestError, match="device library identifier"):
        rq.device_library_identifier(value)


@pytest.mark.parametrize("value", ["pass.com.example.stamps", "p", "pass-x.y"])
def test_pass_type_identifier_shape(value: str) -> None:
    assert rq.is_pass_type_identifier(value)


@pytest.mark.parametrize("value", ["", ".pass", "pass com", "pass/x", "p" * 256, "pass_x"])
def test_pass_type_identifier_refused(value: str) -> None:
    assert not rq.is_pass_type_identifier(value)


@pytest.mark.parametrize("value", ["1", "113772", "AbC-1_2.3", "s" * 64])
def test_serial_accepted(value: str) -> None:
    assert rq.serial_number(value) == value


@pytest.mark.parametrize("value", ["", "s" * 65, "a b", "a/b", "é", "a+b"])
def test_serial_refused(value: str) -> None:
    with pytest.raises(RequestError, match="serial"):
        rq.serial_number(value)


def test_tag_absent_is_none() -> None:
    assert rq.updated_since_tag(None) is None


@pytest.mark.parametrize("value", ["0", "17", "v1:000123", "a.b-c_d"])
def test_tag_accepted(value: str) -> None:
    assert rq.updated_since_tag(value) == value


@pytest.mark.parametrize("value", ["", "t" * 129, "a b", "1;drop", "ü"])
def test_tag_refused(value: str) -> None:
    with pytest.raises(RequestError, match="passesUpdatedSince"):
        rq.updated_since_tag(value)


# -- headers ------------------------------------------------------------------------------------


def test_apple_pass_token_parsed() -> None:
    assert rq.apple_pass_token("ApplePass abcdefghijklmnop") == "abcdefghijklmnop"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "ApplePass",
        "ApplePass ",
        "applepass abcdefghijklmnop",  # the scheme is exact: devices send exactly this
        "Bearer abcdefghijklmnop",
        "ApplePass  abcdefghijklmnop",  # two spaces
        "ApplePass abc def",
        " ApplePass abcdefghijklmnop",
        "ApplePass abcdefghijklmnop ",
        "ApplePass abc\tdef",
        "ApplePass " + "x" * 257,
        "ApplePass tökén",
    ],
)
def test_apple_pass_token_refused(header: str | None) -> None:
    assert rq.apple_pass_token(header) is None


def test_tokens_equal() -> None:
    assert rq.tokens_equal("abcdefghijklmnop", "abcdefghijklmnop")
    assert not rq.tokens_equal("abcdefghijklmnop", "abcdefghijklmnoq")
    assert not rq.tokens_equal("abcdefghijklmnop", "abcdefghijklmno")
    assert not rq.tokens_equal("abcdefghijklmnop", "")


def test_if_modified_since_parsed() -> None:
    assert rq.if_modified_since("Wed, 21 Oct 2015 07:28:00 GMT") == datetime(
        2015, 10, 21, 7, 28, tzinfo=UTC
    )


def test_if_modified_since_with_offset() -> None:
    parsed = rq.if_modified_since("Wed, 21 Oct 2015 09:28:00 +0200")
    assert parsed == datetime(2015, 10, 21, 7, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    "value", [None, "", "yesterday", "Wed, 99 Foo 2015", "x" * 65, "1445412480"]
)
def test_if_modified_since_invalid_is_ignored(value: str | None) -> None:
    assert rq.if_modified_since(value) is None


@pytest.mark.parametrize(
    "value", ["Mon, 01 Jan 9999999999 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 -2359"]
)
def test_if_modified_since_out_of_range_is_ignored(value: str) -> None:
    # Such dates overflow datetime (OverflowError, not ValueError): ignored, never a 500.
    assert rq.if_modified_since(value) is None


def test_http_date_round_trips_and_drops_microseconds() -> None:
    moment = datetime(2026, 5, 12, 10, 30, 15, 999_999, tzinfo=UTC)
    header = rq.http_date(moment)
    assert header == "Tue, 12 May 2026 10:30:15 GMT"
    assert rq.if_modified_since(header) == moment.replace(microsecond=0)


def test_http_date_converts_zones_and_naive_is_utc() -> None:
    cet = timezone(timedelta(hours=2))
    assert rq.http_date(datetime(2026, 5, 12, 12, 0, tzinfo=cet)) == "Tue, 12 May 2026 10:00:00 GMT"
    assert rq.http_date(datetime(2026, 5, 12, 10, 0)) == "Tue, 12 May 2026 10:00:00 GMT"


def test_change_second_rounds_up() -> None:
    exact = datetime(2026, 5, 12, 10, 0, 0, tzinfo=UTC)
    assert rq.change_second(exact) == exact
    assert rq.change_second(exact + timedelta(microseconds=1)) == exact + timedelta(seconds=1)
    assert rq.change_second(exact.replace(tzinfo=None)) == exact


def test_not_modified_at_second_precision() -> None:
    changed = datetime(2026, 5, 12, 10, 0, 0, 500_000, tzinfo=UTC)
    second = changed.replace(microsecond=0) + timedelta(seconds=1)
    assert rq.not_modified(changed, second)
    assert rq.not_modified(changed, second + timedelta(days=1))
    assert not rq.not_modified(changed, second - timedelta(seconds=1))
    assert not rq.not_modified(changed, None)
    assert rq.not_modified(changed.replace(tzinfo=None), second)


def test_last_modified_is_the_change_second_once_settled() -> None:
    changed = datetime(2026, 5, 12, 10, 0, 0, 300_000, tzinfo=UTC)
    later = changed + timedelta(minutes=1)
    assert rq.last_modified(changed, later) == "Tue, 12 May 2026 10:00:01 GMT"
    assert rq.not_modified(changed, rq.if_modified_since(rq.last_modified(changed, later)))


def test_a_second_change_in_the_same_second_is_never_hidden() -> None:
    first = datetime(2026, 5, 12, 10, 0, 0, 300_000, tzinfo=UTC)
    answered = first + timedelta(milliseconds=200)  # the device fetched right after the change
    header = rq.last_modified(first, answered)
    since = rq.if_modified_since(header)
    second_change = first + timedelta(milliseconds=500)  # same wall-clock second
    assert not rq.not_modified(second_change, since)
    # And the unchanged pass is fetched again, not wrongly 304'd, until the second settles.
    assert not rq.not_modified(first, since)
    settled = rq.if_modified_since(
        rq.last_modified(first, first + rq.SETTLE + timedelta(seconds=1))
    )
    assert rq.not_modified(first, settled)
    # Any change after a settled answer lands in a later second.
    assert not rq.not_modified(first + rq.SETTLE + timedelta(seconds=1), settled)


# -- bodies -------------------------------------------------------------------------------------


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_read_body_joins_chunks() -> None:
    assert await rq.read_body(_stream(b"ab", b"", b"cd"), 4) == b"abcd"


async def test_read_body_refuses_declared_length_before_reading() -> None:
    read: list[bytes] = []

    async def watched() -> AsyncIterator[bytes]:
        read.append(b"x")
        yield b"x"

    with pytest.raises(RequestTooLargeError):
        await rq.read_body(watched(), 4, content_length="5")
    assert read == []


async def test_read_body_stops_at_the_chunk_that_passes_the_limit() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1000

    with pytest.raises(RequestTooLargeError, match="over 4096 bytes"):
        await rq.read_body(endless(), 4096, content_length="10")  # the header lies
    assert pulled == 5


@pytest.mark.parametrize("header", ["-1", "abc", "1e3", "9" * 19, " 3"])
async def test_read_body_malformed_content_length(header: str) -> None:
    with pytest.raises(RequestError, match="Content-Length") as info:
        await rq.read_body(_stream(b""), 4, content_length=header)
    assert not isinstance(info.value, RequestTooLargeError)


def test_register_push_token() -> None:
    assert rq.register_push_token(b'{"pushToken": "00ff00ff00ff"}') == "00ff00ff00ff"
    assert rq.register_push_token(b'{"pushToken": "ABCDEF12", "extra": 1}') == "ABCDEF12"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'["pushToken"]', "JSON object"),
        (b'"abc"', "JSON object"),
        (b"{}", "missing pushToken"),
        (b'{"pushToken": null}', "missing pushToken"),
        (b'{"pushToken": 12345678}', "hex string"),
        (b'{"pushToken": ""}', "hex string"),
        (b'{"pushToken": "abc"}', "hex string"),
        (b'{"pushToken": "not-hex-at-all"}', "hex string"),
        (b'{"pushToken": "' + b"a" * 513 + b'"}', "hex string"),
        (b'{"pushToken": NaN}', "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_register_body_refused(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        rq.register_push_token(body)


def test_log_messages_truncated() -> None:
    body = b'{"logs": ["short", "' + b"x" * 2000 + b'"]}'
    messages = rq.log_messages(body)
    assert messages[0] == "short"
    assert len(messages[1]) == rq.MAX_LOG_MESSAGE
    assert messages[1].endswith("…")
    assert rq.log_messages(b'{"logs": []}') == []


@pytest.mark.parametrize(
    "body", [b"{}", b'{"logs": "one"}', b'{"logs": [1]}', b'{"logs": ["a", null]}', b"[]", b"x"]
)
def test_log_body_refused(body: bytes) -> None:
    with pytest.raises(RequestError):
        rq.log_messages(body)


# -- page secrets -------------------------------------------------------------------------------


def test_page_secret_is_stable_and_keyed() -> None:
    key = b"k" * 32
    secret = rq.page_secret(key, "113772")
    assert len(secret) == 22
    assert secret == rq.page_secret(key, "113772")
    assert secret != rq.page_secret(key, "113773")
    assert secret != rq.page_secret(b"j" * 32, "113772")
    assert rq.page_secret_valid(key, "113772", secret)
    assert not rq.page_secret_valid(key, "113773", secret)
    assert not rq.page_secret_valid(
        key, "113772", secret[:-1] + ("A" if secret[-1] != "A" else "B")
    )
    assert not rq.page_secret_valid(key, "113772", secret + "A")
    assert not rq.page_secret_valid(key, "113772", "")
