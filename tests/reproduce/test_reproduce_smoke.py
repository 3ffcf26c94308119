"""End to end: `reproduce` at the smoke budget on every registered experiment (slow: it trains)."""

from __future__ import annotations

import json

import pytest

from metareason.reproduce import experiments, get_budget, reproduce


@pytest.mark.slow
def test_smoke_budget_end_to_end(tmp_path):
    registered = experiments()
    md = reproduce(get_budget("smoke"), tmp_path / "smoke", experiments=registered, progress=False)
    report = json.loads((tmp_path / "smoke" / "report.json").read_text())
    assert not report["failed"], report["failed"]
    ids = [c.id for e in registered.values() for c in e.claims]
    assert [c["id"] for c in report["claims"]] == ids
    assert all(c["status"] == "measured" and c["verdict"] in ("supported", "contradicted", "inconclusive")
               for c in report["claims"])
    text = md.read_text()
    assert all(f"| {i} |" in text for i in ids)
    figures = {c["figure"] for c in report["claims"] if c["figure"]}  # relative to the report's folder
    assert figures and all((tmp_path / "smoke" / f).is_file() for f in figures), figures
    if not registered:
        assert "Nothing selected" in text
    # a rerun resumes every unit and reports the same numbers
    reproduce(get_budget("smoke"), tmp_path / "smoke", experiments=registered, progress=False)
    again = json.loads((tmp_path / "smoke" / "report.json").read_text())
    assert {u["status"] for u in again["units"].values()} <= {"resumed"}
    assert [c["measured"] for c in again["claims"]] == [c["measured"] for c in report["claims"]]
