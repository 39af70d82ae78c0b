"""The served demo's preparation and its logging push worker."""

from __future__ import annotations

import asyncio
import logging

import pytest
from click.testing import CliRunner

from conftest import TEMPLATES  # tests/conftest.py
from passkit_stamps.cli import main
from passkit_stamps.delivery.runner import running_worker
from passkit_stamps.runtime.demo import DEMO_CARDS, demo_delivery, prepare_demo
from passkit_stamps.runtime.devpki import make_dev_pki
from passkit_stamps.service import StampService


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_prepare_demo_is_idempotent(
    store, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    service = StampService(store)
    serials = await prepare_demo(service, TEMPLATES)
    assert serials == [c.serial for c in DEMO_CARDS]
    before = {s: (await service.get_card(s)).card for s in serials}
    salon = before["DEMO-SALON-1"]
    assert salon.language == "de"
    assert any(v.redeemed for v in salon.vouchers) and salon.vouchers_ready
    assert before["DEMO-COFFEE-2"].vouchers_ready
    assert await prepare_demo(service, TEMPLATES) == serials
    assert {s: (await service.get_card(s)).card for s in serials} == before

    # The real path: a change to a card on a registered device is pushed over HTTP/2 to the
    # demo's fake APNs, which logs the push as it received it; the outbox is drained.
    pki = make_dev_pki(tmp_path / "pki")
    token = "d3" * 32
    await service.register_device("demo-phone", token, pki.pass_type_identifier, "DEMO-COFFEE-1")
    await service.add_stamps("DEMO-COFFEE-1", 1)
    with caplog.at_level(logging.INFO, logger="passkit_stamps.web.push"):
        async with demo_delivery(pki) as delivery, running_worker(service, delivery) as worker:
            for _ in range(200):
                if worker.metrics.deliveries["apple"]:
                    break
                await asyncio.sleep(0.02)
    pushes = [r.getMessage() for r in caplog.records if "fake APNs received" in r.getMessage()]
    assert pushes == [
        f"fake APNs received a push for device token {token[:8]}… topic "
        f"{pki.pass_type_identifier}: 200 OK"
    ]
    assert await service.pending_updates() == []


def test_serve_needs_its_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    result = runner.invoke(main, ["serve"], env={"PASSKIT_STAMPS_DB": f"sqlite:///{tmp_path}/x.db"})
    assert result.exit_code != 0
    assert "wwdr is required" in result.output
    result = runner.invoke(main, ["serve", "--secret-key", "abc"])
    assert result.exit_code != 0
    assert "secret-key must be at least 16 bytes" in result.output


def test_serve_needs_a_secret_key_for_card_pages(tmp_path, dev_pki) -> None:  # type: ignore[no-untyped-def]
    args = [
        "serve", "--db", f"sqlite:///{tmp_path}/x.db", "--public-url", "https://stamps.example",
        "--p12", str(dev_pki.signer_p12), "--p12-password", dev_pki.p12_password,
        "--wwdr", str(dev_pki.wwdr_cert),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, env={"PASSKIT_STAMPS_SECRET_KEY": None})
    assert result.exit_code == 1
    assert "--secret-key is required" in result.output
    assert "Traceback" not in result.output
