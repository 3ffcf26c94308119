"""Named datasets: the one resolver of every `--data` spec (probe, eval).

    named_records("lab:test", lab=cfg)            # the lab's test split
    named_records("lab:test:arith,linear", lab=cfg)  # per family (an untrained family: its held-out questions)
    named_records("champ")                        # CHAMP, offline from the champ-dataset package
    named_records("answers.jsonl")                # a .jsonl / .parquet file of records (metareason.data.manual)

Specs: "lab" (= "lab:test"), "lab:SPLIT", "lab:SPLIT:FAM1,FAM2", "champ", or a file path.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any, Iterator

from metareason.data.records import DataError

__all__ = ["DatasetError", "NAMED", "is_lab_spec", "champ_records", "named_records"]

#: Dataset names resolved without a file.
NAMED = ("lab", "lab:SPLIT[:FAMILIES]", "champ")


class DatasetError(DataError):
    """A `--data` spec that does not resolve (one line, names the spec)."""


def is_lab_spec(spec: str) -> bool:
    """True for "lab" and "lab:..." (the questions come from the model's own lab config)."""
    return spec == "lab" or spec.startswith("lab:")


def _champ_problems() -> dict[str, Any]:
    try:
        files = resources.files("champ_dataset")
    except ModuleNotFoundError:
        raise DataError("CHAMP needs the champ-dataset package (pip install champ-dataset)") from None
    path = files / "dataset_files" / "v0.json"
    if not path.is_file():
        raise DataError(f"champ-dataset is installed but has no {path} (expected version 1.0.0)")
    return json.loads(path.read_text(encoding="utf-8"))["problems"]


def champ_records() -> Iterator[dict[str, Any]]:
    """CHAMP's 270 problems as records (see `metareason.data.ChampBuilder`): id = CHAMP identifier,
    source "champ", family = category, trajectory = the solution steps one per line, style
    "reference", generations [], difficulty -1."""
    for identifier, problem in _champ_problems().items():
        steps = problem.get("solution", {}).get("steps", [])
        yield {
            "id": identifier,
            "source": "champ",
            "family": problem.get("category", ""),
            "question": problem["_text"],
            "answer": problem["_answer"],
            "trajectory": "\n".join(step["_text"] for step in steps),
            "style": "reference",
            "generations": [],
            "difficulty": -1,
        }


def _lab_records(spec: str, lab, also_styles: tuple[str, ...]) -> list[dict]:
    from metareason.tasks.lab import SPLITS, lab_records

    parts = ["lab", "test"] if spec == "lab" else spec.split(":")
    if len(parts) not in (2, 3) or parts[1] not in SPLITS[1:]:
        raise DatasetError(f"dataset {spec!r}: expected lab:SPLIT or lab:SPLIT:FAM1,FAM2 with SPLIT one of "
                           f"{', '.join(SPLITS[1:])}")
    split = parts[1]
    if len(parts) == 2:
        return list(lab_records(lab, split, also_styles=also_styles))
    recs, trained = [], None  # per family: a trained family's own split, or an untrained one's held-out questions
    for fam in (f for f in parts[2].split(",") if f):
        if fam in lab.families:
            trained = list(lab_records(lab, split, also_styles=also_styles)) if trained is None else trained
            recs += [r for r in trained if r["family"] == fam]
        else:
            other = dataclasses.replace(lab, heldout_families=(fam,))
            recs += list(lab_records(other, "heldout", also_styles=also_styles))
    return recs


def named_records(spec: str, *, lab=None, also_styles: tuple[str, ...] = ()) -> list[dict]:
    """The records of one `--data` spec. `lab`: the model's `LabConfig` (needed by lab specs; None
    for a Hugging Face model, which then refuses them); `also_styles`: lab records also carry these
    trajectory styles (`lab_records`). Raises `DatasetError` on a spec that does not resolve."""
    if is_lab_spec(spec):
        if lab is None:
            raise DatasetError(f"dataset {spec!r} needs a lab model; a Hugging Face model reads champ or "
                               ".jsonl/.parquet files")
        return _lab_records(spec, lab, also_styles)
    if spec == "champ":
        if lab is not None:
            raise DatasetError("dataset 'champ' is competition math in words; a lab model reads lab:SPLIT or "
                               "files of lab questions")
        return list(champ_records())
    from metareason.data.manual import read_records
    return read_records(spec).records
