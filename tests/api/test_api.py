"""The till API through its ASGI app (mounted at /api), on both stores: every operation, roles,
keys, idempotency, problems, bounds and rates."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pytest

from passkit_stamps.api import ApiConfig
from passkit_stamps.api.app import TillApi
from passkit_stamps.api.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX, problem_types
from passkit_stamps.service import ApiRole, StampService
from passkit_stamps.store import schema as tables

from .conftest import MOUNT, WEB, Api, make_parent

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = dict(r.json())
    assert PROBLEM_KEYS <= set(body) <= PROBLEM_KEYS | {"errors"}
    assert body["status"] == status
    assert body["type"] == TYPE_PREFIX + kind
    assert body["title"] and body["detail"]
    return body


async def stamp(api: Api, serial: str, key: str | None = None, **kw: Any) -> httpx.Response:
    return await api.call("POST", f"/cards/{serial}/stamps", key or api.staff, **kw)


async def card_with_voucher(api: Api) -> tuple[str, str]:
    serial = (await api.issue(holder={"name": "Vera"}))["card"]["serial"]
    for count in (3, 3, 2):  # at most 3 a visit; the reward is at 8
        r = await stamp(api, serial, json={"count": count})
        assert r.status_code == 200, r.text
    return serial, r.json()["card"]["vouchers"][0]["code"]


# -- operations ----------------------------------------------------------------------------------


async def test_issue_returns_the_card_page_and_pass_urls(api: Api) -> None:
    out = await api.issue(holder={"name": "Ana", "email": "ana@example.com"}, language="en")
    card = out["card"]
    serial = card["serial"]
    assert card["card_page_url"] == WEB.card_page_url(serial)
    assert card["pass_url"] == WEB.card_page_url(serial) + "/pass.pkpass"
    assert card["holder"]["name"] == "Ana"
    assert card["language"] == "en"
    assert [e["type"] for e in out["events"]] == ["card_issued"]
    assert "authentication_token" not in json.dumps(out)
    details = await api.service.get_card(serial)
    assert details.card.holder.email == "ana@example.com"


async def test_look_up_by_serial_and_by_scanned_barcode(api: Api) -> None:
    serial = (await api.issue(holder={"name": "Bo"}))["card"]["serial"]
    by_serial = await api.call("GET", f"/cards/{serial}", api.staff)
    assert by_serial.status_code == 200
    body = by_serial.json()
    assert body["template_name"] == "Free Coffee" and body["required"] == 8
    assert body["remaining"] == 8 and body["platforms"] == []
    # A scanner sends what the pass's barcode holds (the serial), often with a line end.
    scanned = await api.call("GET", "/barcode", api.staff, params={"message": serial + "\r\n"})
    assert scanned.status_code == 200
    assert scanned.json() == body
    missing = await api.call("GET", "/barcode", api.staff, params={"message": "NOPE1234"})
    assert_problem(missing, 404, "card-not-found")


async def test_stamp_set_and_journal_actor(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    r = await stamp(api, serial, json={"count": 2, "code": "receipt-17"})
    assert r.status_code == 200
    assert r.json()["card"]["stamps"] == 2
    r = await stamp(api, serial)  # no body: one stamp
    assert r.json()["card"]["stamps"] == 3
    r = await api.call("PUT", f"/cards/{serial}/stamps", api.manager, json={"stamps": 5})
    assert r.json()["card"]["stamps"] == 5
    history = await api.service.card_history(serial)
    actors = {e.type.value: e.actor for e in history}
    assert actors["stamp_added"] == f"api-key:{api.staff_id} (till 1)"
    assert actors["stamps_adjusted"] == f"api-key:{api.manager_id} (back office)"
    assert actors["card_issued"] == f"api-key:{api.manager_id} (back office)"


async def test_redeem_a_voucher_by_its_scanned_code(api: Api) -> None:
    serial, code = await card_with_voucher(api)
    r = await api.call("POST", "/vouchers/redeem", api.staff, json={"code": code})
    assert r.status_code == 200, r.text
    assert r.json()["card"]["serial"] == serial
    assert r.json()["card"]["vouchers"][0]["redeemed_at"] is not None
    again = await api.call("POST", "/vouchers/redeem", api.staff, json={"code": code})
    assert_problem(again, 409, "voucher")
    unknown = await api.call("POST", "/vouchers/redeem", api.staff, json={"code": "ZZZZZZZZZZ"})
    assert_problem(unknown, 404, "not-found")


async def test_coupon_message_holder_void_delete_history(api: Api) -> None:
    serial = (await api.issue(holder={"name": "Cy"}))["card"]["serial"]
    m = api.manager
    r = await api.call("POST", f"/cards/{serial}/coupons", m, json={"title": "Free cake"})
    assert r.status_code == 200
    assert r.json()["card"]["vouchers"][0]["kind"] == "coupon"
    r = await api.call("POST", f"/cards/{serial}/message", m, json={"text": "Hello!"})
    assert r.json()["card"]["message"] == "Hello!"
    holder = {"name": "Cyrus", "email": "cy@example.com", "phone": "+49 30 1234"}
    r = await api.call("PUT", f"/cards/{serial}/holder", m, json=holder)
    assert r.status_code == 200
    assert r.json()["card"]["holder"]["name"] == "Cyrus"
    r = await api.call("GET", f"/cards/{serial}/history", m)
    types = [e["type"] for e in r.json()["items"]]
    assert types == ["card_issued", "coupon_issued", "voucher_issued", "message_sent"] or (
        types[0] == "card_issued" and "coupon_issued" in types and "message_sent" in types
    )
    r = await api.call("POST", f"/cards/{serial}/void", m)
    assert r.json()["card"]["state"] == "voided"
    assert_problem(await stamp(api, serial), 409, "card-inactive")
    r = await api.call("DELETE", f"/cards/{serial}", m)
    assert r.status_code == 200
    assert r.json()["card"]["holder"]["name"] is None
    assert r.json()["card"]["card_page_url"] is None  # the page is gone
    assert_problem(await api.call("GET", f"/cards/{serial}", api.staff), 404, "card-not-found")
    r = await api.call("GET", f"/cards/{serial}/history", m)
    assert r.json()["items"][-1]["type"] == "card_deleted"


async def test_cards_search_filters_pages(api: Api) -> None:
    for i in range(5):
        await api.issue(holder={"name": f"Pager {i}"})
    await api.issue(template_id="salon", holder={"name": "Salon Sue"})
    r = await api.call("GET", "/cards", api.manager, params={"search": "pager", "limit": 2})
    page = r.json()
    assert r.status_code == 200
    assert page["total"] == 5 and page["total_exact"] and page["has_more"]
    assert len(page["items"]) == 2
    r = await api.call(
        "GET", "/cards", api.manager, params={"search": "pager", "limit": 2, "offset": 4}
    )
    assert len(r.json()["items"]) == 1 and not r.json()["has_more"]
    # keyset pages: follow next_cursor to the end
    seen: list[str] = []
    params: dict[str, Any] = {"search": "pager", "limit": 2}
    while True:
        body = (await api.call("GET", "/cards", api.manager, params=params)).json()
        seen += [c["serial"] for c in body["items"]]
        if body["next_cursor"] is None:
            break
        params = {"search": "pager", "limit": 2, "cursor": body["next_cursor"]}
    assert len(seen) == len(set(seen)) == 5
    bad = await api.call("GET", "/cards", api.manager, params={"cursor": "nonsense"})
    assert_problem(bad, 422, "card-input")
    r = await api.call("GET", "/cards", api.manager, params={"template": "salon"})
    assert [c["holder"]["name"] for c in r.json()["items"]] == ["Salon Sue"]
    r = await api.call("GET", "/cards", api.manager, params={"sort": "name", "search": "pager"})
    assert [c["holder"]["name"] for c in r.json()["items"]] == [f"Pager {i}" for i in range(5)]
    r = await api.call("GET", "/cards", api.manager, params={"state": "nonsense"})
    body = assert_problem(r, 422, "invalid-input")
    assert body["errors"][0]["field"] == "query.state"


async def test_journal_filters(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    await stamp(api, serial)
    await api.issue(template_id="salon")
    m = api.manager
    r = await api.call("GET", "/journal", m, params={"type": "stamp_added"})
    assert [e["type"] for e in r.json()["items"]] == ["stamp_added"]
    r = await api.call(
        "GET", "/journal", m, params=[("type", "stamp_added"), ("type", "card_issued")]
    )
    assert r.json()["total"] == 3
    r = await api.call("GET", "/journal", m, params={"template": "salon"})
    assert {e["template_id"] for e in r.json()["items"]} == {"salon"}
    first = (await api.service.card_history(serial))[0].at
    r = await api.call("GET", "/journal", m, params={"until": first.isoformat()})
    assert r.json()["total"] == 0
    r = await api.call("GET", "/journal", m, params={"since": first.isoformat(), "order": "oldest"})
    assert r.json()["items"][0]["serial"] == serial
    assert_problem(
        await api.call("GET", "/journal", m, params={"since": "soon"}), 422, "invalid-input"
    )


async def test_csv_export_is_streamed(api: Api) -> None:
    await api.issue(holder={"name": "=cmd()", "phone": "+49 1"})
    async with api.client.stream(
        "GET", MOUNT + "/export.csv", headers=api.auth(api.manager), params={"bom": "true"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "content-length" not in r.headers  # streamed
        text = (await r.aread()).decode("utf-8")
    assert text.startswith("\ufeffserial,name")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0]["name"] == "'=cmd()" and rows[0]["phone"] == "'+49 1"
    r = await api.call("GET", "/export.csv", api.manager, params={"state": "gone"})
    assert_problem(r, 422, "invalid-input")


async def test_broadcast_dry_run_then_send(api: Api) -> None:
    for name in ("Bea", "Ben"):
        await api.issue(holder={"name": name})
    await api.issue(template_id="salon")
    m = api.manager
    body = {"message": "Closed on Monday", "template": "coffee"}
    r = await api.call("POST", "/broadcasts/dry-run", m, json=body)
    assert r.status_code == 200, r.text
    reach = r.json()
    assert reach["cards"] == 2 and reach["no_wallet"] == 2 and "blocking" in reach["warning"]
    assert (await api.service.journal(types="campaign_sent")).total == 0  # nothing sent
    r = await api.call("POST", "/broadcasts", m, json=body)
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["cards"] == 2 and sent["state"] == "sent"
    assert sent["actor"] == f"api-key:{api.manager_id} (back office)"
    report = await api.call("GET", f"/broadcasts/{sent['id']}", m)
    assert report.json() == sent
    journal = await api.service.journal(types="campaign_sent")
    assert journal.total == 2
    assert {e.actor for e in journal.items} == {sent["actor"]}
    assert_problem(await api.call("GET", "/broadcasts/999999", m), 404, "card-not-found")
    assert_problem(await api.call("GET", "/broadcasts/x1", m), 404, "not-found")
    r = await api.call("POST", "/broadcasts", m, json={"message": ""})
    assert_problem(r, 422, "invalid-input")


# -- roles, keys ---------------------------------------------------------------------------------


async def test_staff_may_only_look_up_stamp_and_redeem(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    table = TillApi(api.service, ApiConfig()).operations()
    staff_ops = {op.operation_id for op in table if op.role is ApiRole.STAFF}
    assert staff_ops == {"getCard", "findCardByBarcode", "addStamps", "redeemVoucher"}
    for op in table:
        if op.role is ApiRole.STAFF:
            continue
        path = op.path.replace("{serial}", serial).replace("{campaign_id}", "1")
        r = await api.call(op.method, path, api.staff, json={})
        assert_problem(r, 403, "api-permission")
    # nothing happened
    assert [e.type.value for e in await api.service.card_history(serial)] == ["card_issued"]


async def test_missing_unknown_wrong_and_revoked_keys_are_refused_alike(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    key_id, secret = api.staff[4:20], api.staff[21:]
    other_id = "0" * 16 if key_id != "0" * 16 else "1" * 16
    answers = []
    for header in (
        None,
        "Basic abc",
        f"Bearer pks_{key_id}_{'A' * 43}",  # right id, wrong secret
        f"Bearer pks_{other_id}_{secret}",  # unknown id
        "Bearer nonsense",
    ):
        headers = {} if header is None else {"Authorization": header}
        r = await api.call("GET", f"/cards/{serial}", headers=headers)
        body = assert_problem(r, 401, "api-key")
        assert r.headers["www-authenticate"].startswith("Bearer")
        answers.append(body)
    # No oracle: an unknown key id and a wrong secret give the same answer.
    assert answers[2] == answers[3] == answers[4]
    assert (await stamp(api, serial)).status_code == 200
    revoked = await api.service.revoke_api_key(api.staff_id)
    assert revoked.revoked_at is not None
    assert_problem(await stamp(api, serial), 401, "api-key")


async def test_keys_are_stored_hashed(api: Api) -> None:
    def rows(conn: Any) -> list[Any]:
        return list(conn.execute(tables.api_keys.select()).mappings())

    stored = await api.service.store.run_read(rows)
    assert len(stored) == 2
    dump = json.dumps([dict(r) for r in stored], default=str)
    for key in (api.staff, api.manager):
        assert key[21:] not in dump and key not in dump
    listed = await api.service.list_api_keys()
    assert {k.role for k in listed} == {ApiRole.STAFF, ApiRole.MANAGER}
    assert "secret" not in repr(listed)


# -- idempotency, problems, bounds, rates --------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    headers = {"Idempotency-Key": "till1-receipt-0042"}
    first = await stamp(api, serial, json={"count": 2}, headers=headers)
    again = await stamp(api, serial, json={"count": 2}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert not first.json()["replayed"] and again.json()["replayed"]
    assert again.json()["card"] == first.json()["card"]
    assert (await api.service.get_card(serial)).card.stamps == 2
    other = await stamp(api, serial, json={"count": 1}, headers=headers)
    assert_problem(other, 409, "idempotency-conflict")
    bad = await stamp(api, serial, headers={"Idempotency-Key": "x" * 201})
    assert_problem(bad, 422, "card-input")
    # issue too: a till retrying a timed-out enrolment gets the same card
    h = {"Idempotency-Key": "enrol-7"}
    a = await api.call("POST", "/cards", api.manager, json={"template_id": "coffee"}, headers=h)
    b = await api.call("POST", "/cards", api.manager, json={"template_id": "coffee"}, headers=h)
    assert a.json()["card"]["serial"] == b.json()["card"]["serial"] and b.json()["replayed"]


async def test_every_library_error_has_a_stable_type_and_no_5xx() -> None:
    seen = problem_types()
    assert len({t for t, _, _ in seen}) == len(seen)
    assert all(t.startswith(TYPE_PREFIX) for t, _, _ in seen)
    assert all(400 <= s < 500 for _, s, _ in seen)


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"{", 400, "request"),
        (b"[1]", 400, "request"),
        (b"\xff", 400, "request"),
        (b"[" * 100 + b"]" * 100, 400, "request"),
        (b'{"count": 0}', 422, "invalid-input"),
        (b'{"count": 1, "extra": true}', 422, "invalid-input"),
        (b'{"count": "many"}', 422, "invalid-input"),
    ],
)
async def test_bad_bodies(api: Api, body: bytes, status: int, kind: str) -> None:
    serial = (await api.issue())["card"]["serial"]
    r = await stamp(api, serial, content=body, headers={"Content-Type": "application/json"})
    problem = assert_problem(r, status, kind)
    if status == 422:
        assert problem["errors"][0]["field"].startswith("body")


async def test_bodies_are_bounded_before_parsing(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    big = b'{"code": "' + b"x" * 20_000 + b'"}'
    assert_problem(await stamp(api, serial, content=big), 413, "request-too-large")

    async def chunks() -> Any:  # no Content-Length: refused while reading
        for _ in range(100):
            yield b" " * 1024

    assert_problem(await stamp(api, serial, content=chunks()), 413, "request-too-large")


async def test_a_body_in_several_messages_is_read_whole(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]

    async def chunks() -> Any:  # one ASGI message each
        for part in (b'{"cou', b"", b'nt": ', b"2}"):
            yield part

    r = await stamp(api, serial, content=chunks())
    assert r.status_code == 200, r.text
    assert r.json()["card"]["stamps"] == 2


async def test_read_body_limits_and_disconnect() -> None:
    from starlette.requests import ClientDisconnect

    from passkit_stamps.api.app import _read_body
    from passkit_stamps.errors import RequestError, RequestTooLargeError

    def receiving(*messages: dict[str, Any]) -> Any:
        queue = list(messages)

        async def receive() -> dict[str, Any]:
            return queue.pop(0)

        return receive

    one = receiving({"type": "http.request", "body": b"abcd"})
    assert await _read_body(one, 4, "4") == b"abcd"
    with pytest.raises(RequestTooLargeError):  # declared: refused before reading
        await _read_body(receiving(), 4, "5")
    with pytest.raises(RequestError, match="malformed Content-Length"):
        await _read_body(receiving(), 4, "\u00b9")
    parts = receiving(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cde", "more_body": True},
    )
    with pytest.raises(RequestTooLargeError):  # at the message that passes the limit
        await _read_body(parts, 4, None)
    gone = receiving({"type": "http.request", "body": b"a", "more_body": True},
                     {"type": "http.disconnect"})  # fmt: skip
    with pytest.raises(ClientDisconnect):
        await _read_body(gone, 4, None)


async def test_a_repeated_header_counts_by_its_first_value(api: Api) -> None:
    serial = (await api.issue())["card"]["serial"]
    good, bad = ("Authorization", f"Bearer {api.staff}"), ("Authorization", "Bearer pks_nope")
    path = f"{MOUNT}/cards/{serial}/stamps"
    assert (await api.client.post(path, headers=[good, bad])).status_code == 200
    assert_problem(await api.client.post(path, headers=[bad, good]), 401, "api-key")


async def test_unknown_card_and_route_are_problems(api: Api) -> None:
    assert_problem(await stamp(api, "NOSUCHCARD"), 404, "card-not-found")
    r = await api.call("GET", "/nowhere", api.staff)
    assert_problem(r, 404, "not-found")
    r = await api.call("PATCH", "/cards", api.staff)
    assert_problem(r, 405, "request")


async def test_rate_limit_per_key(service: StampService) -> None:
    staff = await service.create_api_key("till", "staff")
    other = await service.create_api_key("till 2", "staff")
    serial = (await service.issue_card("coffee")).card.serial
    parent = make_parent(service, ApiConfig(rate=0.5, burst=3))
    transport = httpx.ASGITransport(app=parent)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def get(key: str) -> httpx.Response:
            auth = {"Authorization": f"Bearer {key}"}
            return await client.get(f"{MOUNT}/cards/{serial}", headers=auth)

        statuses = [(await get(staff.secret)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        r = await get(staff.secret)
        assert_problem(r, 429, "api-rate-limit")
        assert 1 <= int(r.headers["retry-after"]) <= 2
        assert (await get(other.secret)).status_code == 200  # per key


# -- the document ---------------------------------------------------------------------------------


async def test_openapi_document_is_built_from_the_handlers_types(api: Api) -> None:
    r = await api.call("GET", "/openapi.json")  # no key needed
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": MOUNT}]
    table = TillApi(api.service, ApiConfig()).operations()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(op.method, op.path) for op in table}
    schemas = doc["components"]["schemas"]
    for op in table:
        entry = doc["paths"][op.path][op.method.lower()]
        assert entry["operationId"] == op.operation_id
        if op.body is not None:
            ref = entry["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            name = ref.rsplit("/", 1)[1]
            own = op.body.model_json_schema(ref_template="#/components/schemas/{model}")
            own.pop("$defs", None)
            assert schemas[name] == own
        for status in ("401", "403", "422", "429"):
            assert PROBLEM_MEDIA_TYPE in entry["responses"][status]["content"]


async def test_answers_are_the_bytes_their_models_would_serialise(api: Api) -> None:
    """Answers are serialised from dicts (models.wire): the same JSON as the model's own."""
    from passkit_stamps.api import models as m

    serial = (await api.issue(holder={"name": "Jürgen ☕", "email": "j@example.com"}))["card"]
    serial = serial["serial"]
    r = await stamp(api, serial, json={"count": 3, "code": "R-1"})
    for model, answer in (
        (m.ChangeOut, r),
        (m.CardDetailsOut, await api.call("GET", f"/cards/{serial}", api.staff)),
        (m.HistoryOut, await api.call("GET", f"/cards/{serial}/history", api.manager)),
        (m.JournalPageOut, await api.call("GET", "/journal", api.manager)),
    ):
        assert answer.status_code == 200, answer.text
        assert (
            model.model_validate_json(answer.content).model_dump_json().encode() == answer.content
        )
