"""Manual-directory files: JSONL and parquet rows, aliases, and bad rows reported by file and line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metareason.data import DataError, RowProblem, manual_splits, read_manual_dir, read_records


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def _write_jsonl(path, lines):
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
    return path


def test_jsonl_fields_aliases_and_defaults(tmp_path):
    d = tmp_path / "aime"
    d.mkdir()
    path = _write_jsonl(d / "test.jsonl", [
        json.dumps({"question": "1+1?", "answer": "2", "generations": ["1+1=2", "two"], "difficulty": 1,
                    "extra": {"ignored": True}}),
        "",  # blank lines are skipped (the line count still advances)
        json.dumps({"problem": "Σ k, k=1..3 ?", "answer": 6, "solution": "1+2+3 = 6", "category": "Sum",
                    "id": 17, "source": "mine", "style": "short", "generations": None}, ensure_ascii=False),
        json.dumps({"question": "x?", "final_answer": "x", "answer": "x"}),
    ])
    got = read_records(path)
    assert got.problems == []
    a, b, c = got.records
    assert a == {"id": "test.jsonl:1", "source": "aime", "family": "", "question": "1+1?", "answer": "2",
                 "trajectory": "", "style": "", "generations": ["1+1=2", "two"], "difficulty": 1}
    assert b == {"id": "17", "source": "mine", "family": "Sum", "question": "Σ k, k=1..3 ?", "answer": "6",
                 "trajectory": "1+2+3 = 6", "style": "short", "generations": [], "difficulty": -1}
    assert c["id"] == "test.jsonl:4" and c["answer"] == "x"
    assert read_records(path, source="other").records[0]["source"] == "other"


BAD_LINES = [
    json.dumps({"question": "ok", "answer": "1"}),                        # 1 good
    '{"question": "broken", "answer": ',                                   # 2 bad JSON
    json.dumps({"question": "no answer here"}),                            # 3 missing answer
    json.dumps({"question": "q", "answer": "a", "generations": "one"}),    # 4 wrong type
    json.dumps(["not", "an", "object"]),                                   # 5 not an object
    b'{"question": "\xff", "answer": "1"}',                                # 6 invalid UTF-8
    json.dumps({"question": "q", "answer": 1.5}),                          # 7 float answer
    json.dumps({"question": "a", "problem": "b", "answer": "1"}),          # 8 conflicting aliases
    json.dumps({"question": "fine", "answer": "2"}),                       # 9 good
]


def test_malformed_jsonl_rows_name_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "train.jsonl", BAD_LINES)
    with pytest.raises(DataError, match=r"train\.jsonl, line 2: bad JSON") as e:
        read_records(path)
    assert str(path) in _one_line(e)

    got = read_records(path, skip_bad=True)
    assert [r["question"] for r in got.records] == ["ok", "fine"]
    assert all(isinstance(p, RowProblem) for p in got.problems)
    assert [p.location for p in got.problems] == [f"line {i}" for i in range(2, 9)]
    expected = ["bad JSON", "missing field 'answer' or 'final_answer'",
                "field 'generations' must be a list of strings, got str", "expected a JSON object, got list",
                "not valid UTF-8", "field 'answer' must be a string, got float",
                "columns 'question' and 'problem' (both question) disagree"]
    for problem, want in zip(got.problems, expected):
        assert want in problem.message, (problem, want)
        text = str(problem)
        assert text.startswith(f"{path}, {problem.location}: ") and "\n" not in text

    # each bad line alone raises with its own line number
    for number in range(2, 9):
        one = _write_jsonl(tmp_path / f"one{number}.jsonl", [BAD_LINES[0], BAD_LINES[number - 1]])
        with pytest.raises(DataError, match=f"one{number}.jsonl, line 2: ") as e:
            read_records(one)
        _one_line(e)


def test_parquet_round_trip_and_bad_rows(tmp_path):
    rows = [
        {"id": "p1", "question": "Σ ∫ 😀?", "answer": "ünïcode", "trajectory": "step 1\nstep 2", "family": "f",
         "generations": ["g1", "g2 ✓"], "difficulty": 4},
        {"id": "p2", "question": "empty gens", "answer": "0", "trajectory": "", "family": "",
         "generations": [], "difficulty": None},
    ]
    d = tmp_path / "src"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), d / "test.parquet")
    got = read_records(d / "test.parquet")
    assert got.problems == []
    for want, record in zip(rows, got.records):
        assert record == {**want, "source": "src", "style": "", "difficulty": want["difficulty"] or -1}

    bad = [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": None}]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet, row 2: missing field 'answer'") as e:
        read_records(tmp_path / "bad.parquet")
    _one_line(e)
    got = read_records(tmp_path / "bad.parquet", skip_bad=True)
    assert len(got.records) == 1 and [p.location for p in got.problems] == ["row 2"]

    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet: not a readable parquet file") as e:
        read_records(tmp_path / "junk.parquet")
    _one_line(e)


def test_manual_dir_splits(tmp_path):
    _write_jsonl(tmp_path / "train-00000-of-00002.jsonl", [json.dumps({"question": "a", "answer": "1"})])
    pq.write_table(pa.Table.from_pylist([{"question": "b", "answer": "2"}]), tmp_path / "train-00001-of-00002.parquet")
    _write_jsonl(tmp_path / "test.jsonl", [json.dumps({"question": "c", "answer": "3"})])
    (tmp_path / "README.md").write_text("ignored")
    assert {k: [p.name for p in v] for k, v in manual_splits(tmp_path).items()} == {
        "test": ["test.jsonl"], "train": ["train-00000-of-00002.jsonl", "train-00001-of-00002.parquet"]}
    got = read_manual_dir(tmp_path, source="s")
    assert [r["question"] for r in got["train"].records] == ["a", "b"]
    assert got["test"].records[0]["source"] == "s"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no <split>.jsonl") as e:
        manual_splits(empty)
    _one_line(e)
    with pytest.raises(DataError, match="does not exist"):
        manual_splits(tmp_path / "missing")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        (tmp_path / "x.csv").write_text("a,b")
        read_records(tmp_path / "x.csv")
