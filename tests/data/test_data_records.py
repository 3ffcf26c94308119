"""The record schema: defaults, decoding, and one-line errors that name the field."""

import numpy as np
import pytest

from metareason.data import FIELDS, DataError, make_record, normalize_record


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def test_defaults_and_field_order():
    r = make_record(id="a", question="q?", answer="4")
    assert list(r) == list(FIELDS)
    assert r == {"id": "a", "source": "", "family": "", "question": "q?", "answer": "4", "trajectory": "",
                 "style": "", "generations": [], "difficulty": -1}


def test_decodes_what_tfds_returns():
    raw = {"id": b"x", "source": b"lab", "family": b"arith", "question": "Σ 1+1 ?".encode(), "answer": b"2",
           "trajectory": b"", "style": b"long", "generations": np.array([b"a", "\u00e9".encode()], dtype=object),
           "difficulty": np.int64(3)}
    r = normalize_record(raw)
    assert r["question"] == "Σ 1+1 ?" and r["generations"] == ["a", "é"] and r["difficulty"] == 3
    assert type(r["difficulty"]) is int
    assert all(type(r[k]) is str for k in FIELDS if k not in ("generations", "difficulty"))
    assert normalize_record(r) == r


@pytest.mark.parametrize("edit,pattern", [
    (lambda r: r.pop("answer"), "record 'a': missing field 'answer'"),
    (lambda r: r.update(question="  "), "field 'question' is empty"),
    (lambda r: r.update(answer=4), "field 'answer' must be a string, got int"),
    (lambda r: r.update(generations="one"), "field 'generations' must be a list of strings, got str"),
    (lambda r: r.update(generations=["ok", 3]), r"generations\[1\] must be a string, got int"),
    (lambda r: r.update(difficulty="hard"), "field 'difficulty' must be an integer, got str"),
    (lambda r: r.update(difficulty=True), "field 'difficulty' must be an integer, got bool"),
    (lambda r: r.update(difficulty=-2), "must be >= 0 or -1"),
    (lambda r: r.update(trajectroy="typo"), "unknown field 'trajectroy'"),
    (lambda r: r.update(answer=b"\xff"), "field 'answer' is not valid UTF-8"),
])
def test_bad_records(edit, pattern):
    record = dict(make_record(id="a", question="q", answer="1"))
    edit(record)
    with pytest.raises(DataError, match=pattern) as e:
        normalize_record(record)
    _one_line(e)
