"""What ``POST /v1/log`` writes to the logging system is bounded: each line is truncated, lines
are rate limited (a token bucket), and what was suppressed is counted and reported."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from passkit_stamps.web.devicelog import (
    CLIENT_LOG_BURST,
    CLIENT_LOG_RATE,
    LOG_BURST,
    LOG_RATE,
    LOGGER_NAME,
    MAX_LOGGED_MESSAGE,
    SUPPRESSED_REPORT_INTERVAL,
    DeviceLog,
)

from .conftest import MOUNT, Wallet

AT = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]


def test_logged_lines_are_truncated_but_kept_whole(caplog: pytest.LogCaptureFixture) -> None:
    log = DeviceLog(clock=Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        log.add(["z" * 1000], at=AT, client="10.0.0.1")
    (line,) = lines(caplog)
    assert len(line) <= MAX_LOGGED_MESSAGE + len("device 10.0.0.1: ") + 1
    assert line.endswith("…")
    assert log.entries()[0].message == "z" * 1000  # the ring buffer keeps what was accepted


def test_a_flood_is_rate_limited_and_the_suppressed_count_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = DeviceLog(size=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        log.add([f"m{i}" for i in range(5_000)], at=AT)
        # one client: its own burst, then nothing at the same instant
        assert len(lines(caplog)) == CLIENT_LOG_BURST
        clock.now += 1.0
        log.add([f"n{i}" for i in range(5_000)], at=AT)
        assert len(lines(caplog)) == CLIENT_LOG_BURST + CLIENT_LOG_RATE  # refilled in a second
        clock.now += SUPPRESSED_REPORT_INTERVAL
        caplog.clear()
        log.add(["after the flood"], at=AT)
    suppressed = 10_000 - CLIENT_LOG_BURST - CLIENT_LOG_RATE
    assert lines(caplog) == [
        f"device log: {suppressed} messages suppressed",
        "device -: after the flood",
    ]
    assert len(log) == 10


def test_the_suppressed_count_is_reported_periodically_during_a_flood(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = DeviceLog(clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        for _ in range(int(3 * SUPPRESSED_REPORT_INTERVAL)):  # a flood for 3 intervals
            log.add(["x"] * 1_000, at=AT)
            clock.now += 1.0
    reports = [line for line in lines(caplog) if "suppressed" in line]
    assert 2 <= len(reports) <= 4
    total = sum(int(r.split()[2]) for r in reports)
    logged = len(lines(caplog)) - len(reports)
    assert total + logged <= 1_000 * int(3 * SUPPRESSED_REPORT_INTERVAL)
    assert logged <= LOG_BURST + LOG_RATE * 3 * SUPPRESSED_REPORT_INTERVAL


def test_one_flooding_client_does_not_silence_the_others(caplog: pytest.LogCaptureFixture) -> None:
    """The device log's bucket was shared: one client's flood suppressed every device's lines."""
    log = DeviceLog(clock=Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        log.add(["junk"] * 10_000, at=AT, client="203.0.113.9")
        log.add(["pass response missing Last-Modified"], at=AT, client="10.0.0.7")
    assert lines(caplog)[-1] == "device 10.0.0.7: pass response missing Last-Modified"


def test_a_flood_from_many_addresses_is_capped_by_the_server_bucket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = DeviceLog(clock=Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        for i in range(1_000):
            log.add(["junk"] * 10, at=AT, client=f"198.51.100.{i}")
    assert len(lines(caplog)) == LOG_BURST


def test_flush_reports_what_is_left(caplog: pytest.LogCaptureFixture) -> None:
    log = DeviceLog(clock=Clock())
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        log.add(["x"] * (CLIENT_LOG_BURST + 7), at=AT)
        log.flush_suppressed()
        log.flush_suppressed()
    assert lines(caplog)[-1] == "device log: 7 messages suppressed"
    assert sum("suppressed" in line for line in lines(caplog)) == 1


def test_limits_are_validated() -> None:
    for kwargs in (
        {"rate": 0},
        {"burst": 0},
        {"client_rate": 0},
        {"client_burst": 0},
        {"max_logged_chars": 1},
        {"size": 0},
    ):
        with pytest.raises(ValueError):
            DeviceLog(**kwargs)  # type: ignore[arg-type]


async def test_20_requests_of_64_kib_write_a_bounded_log(
    wallet: Wallet, caplog: pytest.LogCaptureFixture
) -> None:
    """The report's flood: 20 bodies of 64 KiB wrote 25 MB to the server log."""
    batch = ["q" * 990] * 64  # just under 64 KiB of JSON
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        for _ in range(20):
            response = await wallet.client.post(MOUNT + "/v1/log", json={"logs": batch})
            assert response.status_code == 200
    written = sum(len(line) for line in lines(caplog))
    assert written <= (LOG_BURST + LOG_RATE * 5) * (MAX_LOGGED_MESSAGE + 40)  # not 25 MB
    assert len(lines(caplog)) < 20 * 64
