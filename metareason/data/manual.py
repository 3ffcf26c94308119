"""Reading reasoning data from a manual directory: JSONL or parquet files, one question per row.

Row format (JSON object per line, or parquet columns). Column names and their accepted aliases
(the first name is the canonical one; a row that carries two aliases of one field with
different values is an error):

    question     required   aliases: problem
    answer       required   aliases: final_answer        (a string; a JSON integer is accepted
                                                          and written in decimal)
    generations  optional                                (a list of strings; null = [])
    trajectory   optional   aliases: solution            (one worked solution)
    id           optional   default: "<file name>:<line or row number>" (an integer is accepted)
    source       optional   default: the `source` argument (the directory's name)
    family       optional   aliases: category, subject
    style        optional
    difficulty   optional                                (an integer >= 0; null = -1)

"solution" is deliberately a trajectory alias, never an answer alias: in MATH-style data sets
(MATH, DeepScaleR, ORZ) it holds the worked solution, with the final answer in a separate
"answer" column. Aliases whose values are usually of another type (MATH's "level": "Level 5",
list-valued "responses") are not accepted. Other columns are ignored. Blank JSONL lines are skipped.

A text field longer than `MAX_FIELD_CHARS`, JSON nested too deeply or holding an integer too
long to read, and a second row with an earlier row's `id` but another question are bad rows too;
a file without records is refused.

Bad rows (invalid JSON or UTF-8, not an object, a missing required field, a wrong type) raise a
one-line `DataError` such as `data/train.jsonl, line 7: missing field 'answer'` (parquet:
`..., row 7: ...`, 1-based). With `skip_bad=True` they are skipped and returned as `RowProblem`s.

A manual directory holds files named `<split>.jsonl`, `<split>.parquet` or shards
`<split>-<anything>.jsonl|parquet` (e.g. `train-00000-of-00004.parquet`); the split is the part
of the name before the first "-" or ".", and must match `[A-Za-z0-9_]+`. Other files are ignored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

from metareason.data.records import FIELDS, DataError, Record, normalize_record

__all__ = ["ALIASES", "RowProblem", "ManualRead", "iter_records", "read_records", "manual_splits",
           "read_manual_dir", "row_to_record"]

ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "source": ("source",),
    "family": ("family", "category", "subject"),
    "question": ("question", "problem"),
    "answer": ("answer", "final_answer"),
    "trajectory": ("trajectory", "solution"),
    "style": ("style",),
    "generations": ("generations",),
    "difficulty": ("difficulty",),
}
"""Schema field -> accepted column names, canonical first."""

SUFFIXES = (".jsonl", ".parquet")
_FILE_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)(?:-[^/]*)?\.(?:jsonl|parquet)$")


class RowProblem(NamedTuple):
    """One skipped row: `str(problem)` is the same one-line message `DataError` would carry."""

    path: str
    location: str
    """"line 7" (JSONL) or "row 7" (parquet), 1-based."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}, {self.location}: {self.message}"


class ManualRead(NamedTuple):
    """The result of reading: the good records and the problems of the skipped rows."""

    records: list[Record]
    problems: list[RowProblem]


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def row_to_record(row: Mapping[str, Any], *, default_id: str, source: str, where: str) -> Record:
    """Map one row (column -> value) onto the schema: resolve aliases, fill defaults, validate.

    Raises a one-line `DataError` prefixed with `where` (e.g. "data.jsonl, line 3").
    """
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    fields: dict[str, Any] = {}
    for field in FIELDS:
        present = [name for name in ALIASES[field] if name in row and row[name] is not None]
        if not present:
            continue
        values = [row[name] for name in present]
        if any(v != values[0] for v in values[1:]):
            raise DataError(f"{where}: columns {present[0]!r} and {present[1]!r} (both {field}) disagree")
        fields[field] = values[0]
    for field in ("question", "answer"):
        if field not in fields:
            names = " or ".join(repr(n) for n in ALIASES[field])
            raise DataError(f"{where}: missing field {names}")
    answer = fields["answer"]
    if isinstance(answer, int) and not isinstance(answer, bool):
        fields["answer"] = str(answer)
    fields.setdefault("id", default_id)
    fields.setdefault("source", source)
    return normalize_record(fields, where=where)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    """(location, parsed row or None, error message or None) per non-blank line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            location = f"line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield location, None, f"not valid UTF-8 ({_one_line(e)})"
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                yield location, None, f"bad JSON ({e.msg} at column {e.colno})"
                continue
            except RecursionError:
                yield location, None, "bad JSON (nested too deeply)"
                continue
            except ValueError as e:  # e.g. an integer of more than 4300 digits
                yield location, None, f"bad JSON ({_one_line(e)})"
                continue
            yield location, row, None


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with tensorflow-datasets
        raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.ParquetFile(path)
        batches = table.iter_batches(batch_size=1024)
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row, None
    except DataError:
        raise
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable parquet file ({_one_line(e)})") from None


def iter_records(path: str | Path, *, source: str | None = None,
                 problems: list[RowProblem] | None = None) -> Iterator[Record]:
    """Stream the records of one `.jsonl` or `.parquet` file, row by row.

    problems: None to raise `DataError` at the first bad row; a list to skip bad rows and
    append them to it instead.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        rows = _jsonl_rows(path)
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .jsonl or .parquet)")
    source = path.resolve().parent.name if source is None else source
    first_seen: dict[str, tuple[str, str]] = {}  # id -> (location, question)
    for location, row, error in rows:
        where = f"{path}, {location}"
        try:
            if error is not None:
                raise DataError(f"{where}: {error}")
            number = location.split()[-1]
            record = row_to_record(row, default_id=f"{path.name}:{number}", source=source, where=where)
            seen = first_seen.setdefault(record["id"], (location, record["question"]))
            if seen[1] != record["question"]:
                raise DataError(f"{where}: id {record['id']!r} is also the id of {seen[0]}, with another question "
                                "(ids must be unique)")
        except DataError as e:
            if problems is None:
                raise
            message = str(e)[len(where) + 2:] if str(e).startswith(where + ": ") else str(e)
            problems.append(RowProblem(str(path), location, message))
            continue
        yield record


def read_records(path: str | Path, *, source: str | None = None, skip_bad: bool = False) -> ManualRead:
    """Records of one `.jsonl` or `.parquet` file (see the module docstring for the row format).

    source: the default `source` of rows without one (default: the parent directory's name).
    skip_bad: skip bad rows and return them as problems instead of raising `DataError`.
    Returns `ManualRead(records, problems)`; `problems` is empty unless `skip_bad`.
    """
    problems: list[RowProblem] = []
    records = list(iter_records(path, source=source, problems=problems if skip_bad else None))
    if not records:
        raise DataError(f"{path}: no records" + (f" ({len(problems)} bad rows skipped, the first: {problems[0]})"
                                                 if problems else " (the file is empty)"))
    return ManualRead(records, problems)


def manual_splits(directory: str | Path) -> dict[str, list[Path]]:
    """Split name -> its files (sorted) in a manual directory; `DataError` if there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"manual directory {str(directory)!r} does not exist")
    splits: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.match(path.name)
        if match and path.is_file():
            splits.setdefault(match["split"], []).append(path)
    if not splits:
        raise DataError(f"manual directory {str(directory)!r} has no <split>.jsonl or <split>.parquet files")
    return splits


def read_manual_dir(directory: str | Path, *, source: str | None = None,
                    skip_bad: bool = False) -> dict[str, ManualRead]:
    """Split name -> `ManualRead` of all its files, in file-name order.

    source: the default `source` of rows without one (default: the directory's name).
    """
    directory = Path(directory)
    source = directory.resolve().name if source is None else source
    out: dict[str, ManualRead] = {}
    for split, paths in manual_splits(directory).items():
        records: list[Record] = []
        problems: list[RowProblem] = []
        for path in paths:
            got = read_records(path, source=source, skip_bad=skip_bad)
            records.extend(got.records)
            problems.extend(got.problems)
        out[split] = ManualRead(records, problems)
    return out
