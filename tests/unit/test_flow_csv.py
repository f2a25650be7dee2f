"""The CSV answer is rewritten record by record as its chunks come: the splitter must find each record whole,
wherever the chunks are cut (inside a quoted field, between the two bytes of a line end, inside a character)."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from ccany_addon.web.flow_csv import CsvRecords

FIELDS = st.lists(st.sampled_from(['a', 'é', '😀', '"', ',', '\n', '\r', ' ', '\r\n', '{"k":"v"}']),
                  max_size=12).map("".join)


def _written(rows: list[list[str]]) -> list[bytes]:
    records = []
    for row in rows:
        text = io.StringIO(newline="")
        csv.writer(text).writerow(row)  # as Datasette writes its CSV
        records.append(text.getvalue().encode())
    return records


@given(rows=st.lists(st.lists(FIELDS, min_size=1, max_size=4), min_size=1, max_size=8), cuts=st.data())
def test_records_come_out_whole_however_the_chunks_are_cut(rows: list[list[str]], cuts: st.DataObject) -> None:
    records = _written(rows)
    data = b"".join(records)
    places = sorted(cuts.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[start:end] for start, end in zip([0, *places], [*places, len(data)], strict=True)]
    splitter = CsvRecords()
    found: list[bytes] = []
    for number, chunk in enumerate(chunks):
        found += splitter.feed(chunk, final=number == len(chunks) - 1)
    assert found == records
    assert [next(csv.reader(io.StringIO(record.decode(), newline=""))) for record in found] == rows


def test_an_answer_cut_short_gives_its_last_record_as_it_came() -> None:
    splitter = CsvRecords()
    assert splitter.feed(b'id,body\r\nreq_1,"open', final=False) == [b"id,body\r\n"]
    assert splitter.feed(b" quote", final=True) == [b'req_1,"open quote']
