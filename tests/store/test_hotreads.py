"""The store's direct reads (304 and serials, no transaction) answer exactly what the same
statements answer through a store transaction, and what the service reports from them."""

from __future__ import annotations

import secrets

from passkit_stamps.model import Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.service.apple import parse_update_tag, updated_serials_answer
from passkit_stamps.store.hotreads import HotReads


async def test_direct_reads_agree_with_the_store_and_the_service(
    service: StampService, dev_pki: DevPKI
) -> None:
    pass_type = dev_pki.pass_type_identifier
    direct = HotReads(service.store)
    via_store = HotReads(service.store, direct=False)
    assert direct.path == (
        "sqlite" if service.store.engine.dialect.name == "sqlite" else "postgresql"
    )
    assert via_store.path == "store"

    serials = [
        (await service.issue_card("coffee", Holder(name=f"H{i}"))).card.serial for i in range(4)
    ]
    device, other = secrets.token_hex(16), secrets.token_hex(16)
    for serial in serials[:3]:
        await service.register_device(device, secrets.token_hex(32), pass_type, serial)
    await service.register_device(other, secrets.token_hex(32), pass_type, serials[3])
    first_tag = (await service.serials_updated_since(device, pass_type, None)).last_updated
    await service.add_stamps(serials[1])
    await service.delete_card(serials[2])  # still served (voided): still listed and readable

    for serial in serials:
        found = await service.card_for_pass(pass_type, serial)
        assert found is not None
        card, last_modified = found.card, found.last_modified
        for reads in (direct, via_store):
            assert await reads.pass_state(serial) == (card.authentication_token, last_modified)
        state = await service.pass_state(serial)
        assert state is not None
        assert (state.authentication_token, state.last_modified) == (
            card.authentication_token,
            last_modified,
        )
    for reads in (direct, via_store):
        assert await reads.pass_state("NO-SUCH-CARD") is None

    tags = [None, "0", first_tag, str(int(first_tag) + 10_000), "not-ours", "9" * 19]
    for device_id in (device, other, secrets.token_hex(16)):
        for tag in tags:
            since = parse_update_tag(tag)
            rows = await via_store.registered_serials(device_id, pass_type, since)
            assert await direct.registered_serials(device_id, pass_type, since) == rows
            expected = updated_serials_answer(rows, tag)
            answer = await service.serials_updated_since(device_id, pass_type, tag)
            assert (answer.serials, answer.last_updated) == expected
    # The stamp and the deletion moved the tag: exactly those two cards changed since.
    changed = (await service.serials_updated_since(device, pass_type, first_tag)).serials
    assert changed == sorted(serials[1:3])
    other = await service.serials_updated_since(device, "pass.other.type", None)
    assert (other.serials, other.last_updated) == ([], "0")

    direct.close()
