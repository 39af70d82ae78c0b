"""The CSV export is safe to open in a spreadsheet (issue 12, item 12), on both backends."""

from __future__ import annotations

import csv
import io

from passkit_stamps.model import Holder
from passkit_stamps.service import StampService

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


async def export(service: StampService, **options: bool) -> str:
    return "".join([chunk async for chunk in service.export_csv(**options)])


async def test_every_text_cell_is_neutralised(service: StampService) -> None:
    await service.issue_card("coffee", Holder(name="@SUM(A1)", email="-x@y.example", phone="+1"))
    await service.issue_card("coffee", Holder(name="Ada", phone="-1+1"))
    text = await export(service)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["phone"] for row in rows} == {"'+1", "'-1+1"}
    assert {row["name"] for row in rows} == {"'@SUM(A1)", "Ada"}
    for row in rows:
        assert not any(value.startswith(FORMULA_START) for value in row.values()), row


async def test_a_bom_only_when_asked_and_only_once(service: StampService) -> None:
    await service.issue_card("coffee", Holder(name="Jürgen Müller"))
    plain = await export(service)
    marked = await export(service, bom=True)
    assert not plain.startswith("\ufeff")
    assert marked == "\ufeff" + plain
