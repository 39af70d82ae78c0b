"""The import parser, property-based: any cells give a checked row or an error naming its line,
never an exception; good rows round-trip through CSV."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TEMPLATES  # tests/conftest.py
from passkit_stamps.errors import ImportRowError
from passkit_stamps.model import CardTemplate
from passkit_stamps.service.imports import ImportRow, read_import_rows

COFFEE = CardTemplate.load(TEMPLATES / "coffee")
cells = st.text(max_size=40)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "email", "phone", "stamps", "serial"])
    writer.writerows(rows)
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(cells, min_size=0, max_size=6), max_size=8))
def test_any_cells_give_rows_or_errors_naming_their_line(rows: list[list[str]]) -> None:
    for item in read_import_rows(io.StringIO(_csv(rows), newline=""), COFFEE):
        if isinstance(item, ImportRowError):
            assert str(item).startswith("line ")
        else:
            assert isinstance(item, ImportRow)
            assert 0 <= item.stamps <= COFFEE.stamps_required


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                min_size=1,
                max_size=30,
            )
            .map(str.strip)
            .filter(bool),
            st.integers(0, 8),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_good_rows_round_trip(people: list[tuple[str, int]]) -> None:
    rows = [[name, f"p{i}@example.com", "", str(n), ""] for i, (name, n) in enumerate(people)]
    parsed = list(read_import_rows(io.StringIO(_csv(rows), newline=""), COFFEE))
    assert all(isinstance(p, ImportRow) for p in parsed), parsed
    got = [(p.holder.email, p.stamps) for p in parsed if isinstance(p, ImportRow)]
    assert got == [(f"p{i}@example.com", n) for i, (_, n) in enumerate(people)]
