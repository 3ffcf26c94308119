"""The record schema shared by every reasoning data set (the lab, CHAMP, manual directories).

A record is a plain dict with exactly these fields:

    id          str        unique within its split, non-empty
    source      str        where it comes from ("lab", "champ", a manual directory's name, ...)
    family      str        task family or subject ("arith", "Number-Theory", ...); may be empty
    question    str        non-empty
    answer      str        the reference final answer, non-empty
    trajectory  str        one step-by-step solution; "" when there is none
    style       str        how `trajectory` is written ("long", "short", "reference", ...); may be ""
    generations list[str]  further trajectories / model generations for the question; may be []
    difficulty  int        >= 0, or -1 when unknown

and one optional field (`OPTIONAL_FIELDS`), present only when non-empty:

    mode        str        the prompt's mode marker ("think", "no_think": the lab's two-mode model)

`normalize_record` is the one validating constructor: it fills the optional fields, decodes
bytes (what tensorflow-datasets returns) to str, turns numpy scalars and arrays into Python
ints and lists, and raises a one-line `DataError` naming the record and field otherwise.
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict

import numpy as np

from metareason.errors import MetareasonError

__all__ = ["DataError", "Record", "FIELDS", "OPTIONAL_FIELDS", "TEXT_FIELDS", "MAX_FIELD_CHARS", "make_record", "normalize_record"]

MAX_FIELD_CHARS = 1_000_000
"""The most characters one text field (or one generation) may hold: about 250k tokens, beyond any
context; a longer one is refused when read, before any tokenizing."""

FIELDS = ("id", "source", "family", "question", "answer", "trajectory", "style", "generations", "difficulty")
"""The record fields, in schema order."""

TEXT_FIELDS = ("id", "source", "family", "question", "answer", "trajectory", "style")
"""The fields that hold one string each."""

OPTIONAL_FIELDS = ("mode",)
"""Text fields a record holds only when non-empty (a record without them is as before)."""

_NON_EMPTY = ("id", "question", "answer")
_DEFAULTS = {"source": "", "family": "", "trajectory": "", "style": "", "generations": (), "difficulty": -1}


class DataError(MetareasonError, ValueError):
    """Bad data or a bad data request; the message is one line and names the culprit."""


class Record(TypedDict):
    """The record schema as a type (records are plain dicts)."""

    id: str
    source: str
    family: str
    question: str
    answer: str
    trajectory: str
    style: str
    generations: list[str]
    difficulty: int


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _type_name(value: Any) -> str:
    return type(value).__name__


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{what} is not valid UTF-8 ({_one_line(e)})") from None
    if isinstance(value, str):
        if len(value) > MAX_FIELD_CHARS:
            raise DataError(f"{what} holds {len(value):,} characters, more than the limit of {MAX_FIELD_CHARS:,} "
                            "(metareason.data.records.MAX_FIELD_CHARS)")
        return str(value)
    raise DataError(f"{what} must be a string, got {_type_name(value)}")


def normalize_record(record: Mapping[str, Any], *, where: str | None = None) -> Record:
    """A validated copy of `record` in the schema (see the module docstring).

    Missing optional fields get their defaults (trajectory "", generations [], difficulty -1,
    source/family/style ""). Unknown fields are an error (they are usually typos; readers of
    foreign formats map their columns first, see `metareason.data.manual`). `where` prefixes
    the error message (e.g. "data.jsonl, line 3"); by default the record's id names it.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"{where or 'record'}: expected a mapping of fields, got {_type_name(record)}")
    raw_id = record.get("id")
    if where is None:
        try:
            where = f"record {_as_text(raw_id, 'id')!r}"
        except DataError:
            where = "record"
    unknown = sorted(set(record) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    out: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if name not in record or record[name] is None:
            if name in _NON_EMPTY:
                raise DataError(f"{where}: missing field {name!r}")
            out[name] = _DEFAULTS[name]
            continue
        value = record[name]
        if name == "id" and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            if not -2**63 <= value < 2**63:
                raise DataError(f"{where}: field 'id' is an integer out of range ({len(str(abs(int(value))))} digits)")
            value = str(int(value))
        out[name] = _as_text(value, f"{where}: field {name!r}")
        if name in _NON_EMPTY and not out[name].strip():
            raise DataError(f"{where}: field {name!r} is empty")

    gens = record.get("generations")
    if gens is None:
        gens = ()
    if isinstance(gens, (str, bytes)) or not isinstance(gens, (list, tuple, np.ndarray)):
        raise DataError(f"{where}: field 'generations' must be a list of strings, got {_type_name(gens)}")
    out["generations"] = [_as_text(g, f"{where}: generations[{i}]") for i, g in enumerate(list(gens))]

    difficulty = record.get("difficulty")
    if difficulty is None:
        difficulty = -1
    if isinstance(difficulty, np.ndarray) and difficulty.ndim == 0:
        difficulty = difficulty.item()
    if isinstance(difficulty, (bool, np.bool_)) or not isinstance(difficulty, (int, np.integer)):
        raise DataError(f"{where}: field 'difficulty' must be an integer, got {_type_name(difficulty)}")
    if not -1 <= difficulty < 2**31:
        raise DataError(f"{where}: field 'difficulty' must be >= 0 or -1 (unknown) and below 2**31, got "
                        f"{int(difficulty) if difficulty < 2**63 else 'a larger integer'}")
    out["difficulty"] = int(difficulty)
    optional = {}
    for name in OPTIONAL_FIELDS:
        value = record.get(name)
        value = "" if value is None else _as_text(value, f"{where}: field {name!r}")
        if value:
            optional[name] = value
    return Record(**{name: out[name] for name in FIELDS}, **optional)


def make_record(*, id: str, question: str, answer: str, source: str = "", family: str = "",  # noqa: A002
                trajectory: str = "", style: str = "", generations: list[str] | tuple[str, ...] = (),
                difficulty: int = -1) -> Record:
    """A validated record from keyword arguments (see `normalize_record`)."""
    return normalize_record(dict(id=id, source=source, family=family, question=question, answer=answer,
                                 trajectory=trajectory, style=style, generations=generations,
                                 difficulty=difficulty))
