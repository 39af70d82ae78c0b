"""The command line: ``worker`` configured from environment variables only, pushing to the fake
APNs from its own process; ``outbox`` and ``outbox retry``; usage errors."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from click.testing import CliRunner

from passkit_stamps.cli import main
from passkit_stamps.engine import Platform
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.service.delivery import RetryPolicy
from passkit_stamps.store.store import Store
from passkit_stamps.testing import FakeAPNs

from .conftest import claim_visible

PASS_TYPE = "pass.com.example.stamps"


async def test_worker_from_environment_variables_pushes_a_stamp(
    tmp_path: Path, dev_pki: DevPKI, coffee: CardTemplate, apns: FakeAPNs
) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    async with await Store.open(url) as store:
        service = StampService(store)
        await service.publish_template(coffee)
        serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
        await service.register_device("phone", "ef" * 32, PASS_TYPE, serial)
        env = {
            **os.environ,
            "PASSKIT_STAMPS_DB": url,
            "PASSKIT_STAMPS_P12": str(dev_pki.signer_p12),
            "PASSKIT_STAMPS_P12_PASSWORD": dev_pki.p12_password,
            "PASSKIT_STAMPS_WWDR": str(dev_pki.wwdr_cert),
            "PASSKIT_STAMPS_APNS_HOST": f"{apns.host}:{apns.port}",
            "PASSKIT_STAMPS_APNS_CA": str(apns.ca_file),
            "PASSKIT_STAMPS_POLL_INTERVAL": "0.1",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "passkit_stamps", "worker", env=env,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await service.add_stamps(serial, 1)  # another process's write: found by the poll
            [push] = await apns.wait_for_pushes(1, timeout=20)
            assert (push.token, push.topic, push.status) == ("ef" * 32, PASS_TYPE, 200)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert b"delivery worker" in err


def test_worker_without_apns_credentials_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["worker", "--db", f"sqlite:///{tmp_path}/x.db"], env={"PASSKIT_STAMPS_WWDR": None}
    )
    assert result.exit_code == 2
    assert "APNs authentication" in result.output


async def test_outbox_lists_and_retries_dead_rows(tmp_path: Path, coffee: CardTemplate) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    async with await Store.open(url) as store:
        service = StampService(store)
        await service.publish_template(coffee)
        serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
        await service.record_platform(serial, Platform.GOOGLE, True)
        await service.add_stamps(serial, 1)
        await service.add_stamps(serial, 1)
        rows = await claim_visible(service, "w", want=2)
        await service.fail_deliveries([(r, "403 permissionDenied") for r in rows[:1]],
                                      RetryPolicy(max_attempts=1))  # fmt: skip
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, main, ["outbox"], env={"PASSKIT_STAMPS_DB": url}
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:4] == [
        "google",
        "1",
        "0",
        "1",
    ]  # one leased, one dead
    dead = await asyncio.to_thread(runner.invoke, main, ["outbox", "--db", url, "dead"])
    assert "403 permissionDenied" in dead.output
    retried = await asyncio.to_thread(runner.invoke, main, ["outbox", "--db", url, "retry"])
    assert retried.output.strip() == "1 dead row(s) re-queued"
