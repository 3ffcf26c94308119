"""The runner of `metareason reproduce` on fake, cheap experiments: resume, interruption, refused
settings, shared units, --only, needs, failures, budget full, the command line."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from metareason.cli import main
from metareason.errors import ConfigError
from metareason.reproduce.base import Claim, ClaimResult, Experiment, Unit, get_budget, verdict
from metareason.reproduce.registry import collect, experiment_order, experiments
from metareason.reproduce.runner import plan, reproduce
from metareason.stats import mean_interval

SMOKE = get_budget("smoke")


class Fakes:
    """Experiments whose units count their calls; `fail` / `interrupt` hold keys that raise."""

    def __init__(self, value: float = 1.0):
        self.calls: Counter[str] = Counter()
        self.fail: set[str] = set()
        self.interrupt: set[str] = set()
        self.value = value

    def unit(self, key, needs=(), **settings):
        def run(folder: Path, inputs):
            self.calls[key] += 1
            assert folder.is_dir() and set(inputs) == set(needs)
            if key in self.interrupt:
                raise KeyboardInterrupt
            if key in self.fail:
                raise RuntimeError(f"{key} broke")
            (folder / "done").write_text("1")
            base = sum(inp["value"] for inp in inputs.values())
            return {"value": base + settings.get("offset", self.value), "seed": settings.get("seed", 0)}
        return Unit(key=key, settings={"value": self.value, **settings}, run=run, needs=tuple(needs))

    def experiment(self, name, suffixes, units, direction=1):
        claims = tuple(Claim(f"{name}{s}", f"paper says {name}{s}", "12.5%", "fake measure", direction)
                       for s in suffixes)

        def summarise(budget, raws, figures):
            vals = np.array([r["value"] for k, r in sorted(raws.items()) if k.startswith(f"{name.lower()}/")])
            iv = mean_interval(vals)
            return [ClaimResult(c, iv, verdict(iv, c.direction), n=len(vals), seeds=len(budget.seeds),
                                note=f"fake {name}") for c in claims]
        return Experiment(name, f"fake {name}", claims, lambda b: units(b), summarise)

    def registry(self, **base_settings):
        base = lambda b: [self.unit(f"base/seed-{s}", seed=s, **base_settings) for s in b.seeds]  # noqa: E731
        e1 = self.experiment("E1", "ab", lambda b: base(b) + [
            self.unit(f"e1/seed-{s}", needs=(f"base/seed-{s}",), seed=s, offset=0.5 + s / 10) for s in b.seeds])
        e2 = self.experiment("E2", "a", lambda b: base(b) + [
            self.unit(f"e2/seed-{s}", needs=(f"base/seed-{s}",), seed=s, offset=-2.0 - s / 10) for s in b.seeds])
        e3 = self.experiment("E3", "a", lambda b: [self.unit(f"e3/seed-{s}", seed=s, offset=s - 0.5)
                                                   for s in b.seeds])
        return collect([e3, e1, e2])


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_runs_every_unit_once_shares_keys_and_writes_the_layout(tmp_path):
    f = Fakes()
    out = tmp_path / "out"
    md = reproduce(SMOKE, out, experiments=f.registry(), progress=False)
    # base/seed-S is listed by E1 and E2: it runs once
    assert f.calls == Counter({k: 1 for k in ["base/seed-0", "base/seed-1", "e1/seed-0", "e1/seed-1", "e2/seed-0",
                                              "e2/seed-1", "e3/seed-0", "e3/seed-1"]})
    raw = json.loads((out / "raw" / "e1" / "seed-1.json").read_text())
    assert raw["raw"]["value"] == pytest.approx(1.0 + 0.6) and raw["settings"]["offset"] == 0.6
    assert (out / "work" / "e1" / "seed-1" / "done").is_file() and (out / "figures").is_dir()
    assert (out / "provenance.json").is_file()
    manifest = json.loads((out / "reproduce.json").read_text())
    assert manifest["budget"]["name"] == "smoke" and len(manifest["units"]) == 8
    rep = _report(out)
    rows = {c["id"]: c for c in rep["claims"]}
    assert list(rows) == ["E1a", "E1b", "E2a", "E3a"] and not rep["failed"]
    # E1: values 1.5, 1.6 -> supported; E2: -1, -1.1 -> contradicted; E3: -0.5, 0.5 -> inconclusive
    assert rows["E1a"]["measured"]["mean"] == pytest.approx(1.55) and rows["E1a"]["verdict"] == "supported"
    assert rows["E2a"]["measured"]["mean"] == pytest.approx(-1.05) and rows["E2a"]["verdict"] == "contradicted"
    assert rows["E3a"]["measured"]["mean"] == pytest.approx(0.0) and rows["E3a"]["verdict"] == "inconclusive"
    text = md.read_text()
    for cid, v in (("E1a", "supported"), ("E1b", "supported"), ("E2a", "contradicted"), ("E3a", "inconclusive")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {cid} |"))
        assert f"**{v}**" in row and f"paper says {cid}" in row and "12.5%" in row


def test_resume_skips_finished_units(tmp_path):
    f = Fakes()
    reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False)
    first = _report(tmp_path / "o")
    reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False)
    assert set(f.calls.values()) == {1}
    second = _report(tmp_path / "o")
    assert {u["status"] for u in second["units"].values()} == {"resumed"}
    assert [c["measured"] for c in second["claims"]] == [c["measured"] for c in first["claims"]]


def test_an_interruption_then_a_rerun_completes_without_rerunning(tmp_path):
    f = Fakes()
    f.interrupt = {"e2/seed-0"}
    with pytest.raises(KeyboardInterrupt):
        reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False)
    ran = {k for k, n in f.calls.items() if n}
    assert "e3/seed-0" not in ran and {"base/seed-0", "e1/seed-0"} <= ran
    assert not (tmp_path / "o" / "report.md").exists() and not (tmp_path / "o" / "raw" / "e2" / "seed-0.json").exists()
    f.interrupt = set()
    reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False)
    assert all(n == 1 for k, n in f.calls.items() if k != "e2/seed-0") and f.calls["e2/seed-0"] == 2
    assert len(f.calls) == 8 and not _report(tmp_path / "o")["failed"]


def test_a_changed_setting_is_refused_with_nothing_written(tmp_path):
    reproduce(SMOKE, tmp_path / "o", experiments=Fakes().registry(), progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "o").rglob("*") if p.is_file()}
    g = Fakes(value=2.0)
    with pytest.raises(ValueError, match=r"^unit base/seed-0 in .* other settings \(differs in: value\)"):
        reproduce(SMOKE, tmp_path / "o", experiments=g.registry(), progress=False)
    assert not g.calls
    assert {p: p.read_bytes() for p in (tmp_path / "o").rglob("*") if p.is_file()} == before


def _files(out: Path) -> dict:
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_changed_need_makes_its_dependents_stale_and_supersede_moves_then_reruns_them(tmp_path):
    f, out = Fakes(), tmp_path / "o"
    reproduce(SMOKE, out, experiments=f.registry(), progress=False)
    old_e1 = json.loads((out / "raw" / "e1" / "seed-0.json").read_text())
    before = _files(out)
    # base's settings change: base is refused first, and nothing is written
    with pytest.raises(ValueError, match=r"^unit base/seed-0 in .* other settings \(differs in: offset\) \(and 5 more"
                                         r" unit\(s\)\); .*--supersede"):
        reproduce(SMOKE, out, experiments=f.registry(offset=3.0), progress=False)
    assert _files(out) == before and set(f.calls.values()) == {1}
    # --supersede: base and every unit computed from it move to superseded/ and rerun; e3 does not
    reproduce(SMOKE, out, experiments=f.registry(offset=3.0), progress=False, supersede_stale=True)
    assert {k for k, n in f.calls.items() if n == 2} == {f"{a}/seed-{s}" for a in ("base", "e1", "e2") for s in (0, 1)}
    assert f.calls["e3/seed-0"] == 1
    moved = next((out / "superseded").iterdir())
    assert json.loads((moved / "raw" / "e1" / "seed-0.json").read_text()) == old_e1
    assert (moved / "work" / "e1" / "seed-0" / "done").is_file()
    reasons = json.loads((moved / "superseded.json").read_text())["units"]
    assert reasons["base/seed-0"].startswith("run with other settings (differs in: offset)")
    assert reasons["e1/seed-0"] == "computed from base/seed-0, which is stale (run with other settings)"
    new_e1 = json.loads((out / "raw" / "e1" / "seed-0.json").read_text())
    assert new_e1["raw"]["value"] == pytest.approx(3.0 + 0.5)
    assert new_e1["needs"] == {"base/seed-0": json.loads((out / "raw" / "base" / "seed-0.json").read_text())["id"]}
    # a third run reuses everything
    reproduce(SMOKE, out, experiments=f.registry(offset=3.0), progress=False)
    assert max(f.calls.values()) == 2


def test_a_need_rerun_or_gone_makes_a_finished_dependent_stale(tmp_path):
    f, out = Fakes(), tmp_path / "o"
    reproduce(SMOKE, out, only=("E1",), experiments=f.registry(), progress=False)
    base0, e10 = out / "raw" / "base" / "seed-0.json", out / "raw" / "e1" / "seed-0.json"
    rec = json.loads(base0.read_text())
    # the need's record is another result than the one e1 read (same settings, rerun elsewhere)
    base0.write_text(json.dumps({**rec, "id": "another"}))
    with pytest.raises(ValueError, match=r"^unit e1/seed-0 in .* was computed from another result of base/seed-0 "
                                         r"\(rerun since\); "):
        reproduce(SMOKE, out, only=("E1",), experiments=f.registry(), progress=False)
    # a record without ids (written before they existed) older than its need's
    base0.write_text(json.dumps({k: v for k, v in rec.items() if k != "id"}))
    legacy = {k: v for k, v in json.loads(e10.read_text()).items() if k not in ("id", "needs")}
    e10.write_text(json.dumps(legacy))
    os.utime(e10, (1e9, 1e9))
    with pytest.raises(ValueError, match=r"^unit e1/seed-0 .* was older than the result of base/seed-0 it was "
                                         r"computed from; "):
        reproduce(SMOKE, out, only=("E1",), experiments=f.registry(), progress=False)
    # the need's result moved away (as the refusal suggests): its dependent cannot be kept
    base0.rename(tmp_path / "aside.json")
    with pytest.raises(ValueError, match=r"^unit e1/seed-0 .* computed from a result of base/seed-0 that is gone"):
        reproduce(SMOKE, out, only=("E1",), experiments=f.registry(), progress=False)
    assert set(f.calls.values()) == {1}


def test_an_unfinished_unit_started_with_other_settings_or_needs_is_stale(tmp_path):
    f, out = Fakes(), tmp_path / "o"
    f.interrupt = {"e1/seed-0"}
    with pytest.raises(KeyboardInterrupt):
        reproduce(SMOKE, out, only=("E1",), experiments=f.registry(), progress=False)
    mark = json.loads((out / "work" / "e1" / "seed-0" / ".unit.json").read_text())
    base0 = out / "raw" / "base" / "seed-0.json"
    assert mark["needs"] == {"base/seed-0": json.loads(base0.read_text())["id"]}
    f.interrupt = set()
    # its need's record is not the one it started from: refused before anything runs
    base0.write_text(json.dumps({**json.loads(base0.read_text()), "id": "another"}))
    with pytest.raises(ValueError, match=r"^unit e1/seed-0 .* was started from another result of base/seed-0 \(its "
                                         r"work folder is unfinished\); "):
        reproduce(SMOKE, out, only=("E1",), experiments=f.registry(), progress=False)
    # its own settings changed (e1 is listed with another offset): --supersede moves its work folder and reruns it
    e1 = f.experiment("E1", "ab", lambda b: [f.unit(f"base/seed-{s}", seed=s) for s in b.seeds] + [
        f.unit(f"e1/seed-{s}", needs=(f"base/seed-{s}",), seed=s, offset=9.0) for s in b.seeds])
    (out / "work" / "e1" / "seed-0" / ".unit.json").write_text(json.dumps({**mark, "needs": {}}))
    with pytest.raises(ValueError, match=r"^unit e1/seed-0 .* was started with other settings"):
        reproduce(SMOKE, out, experiments=collect([e1]), progress=False)
    reproduce(SMOKE, out, experiments=collect([e1]), progress=False, supersede_stale=True)
    moved = next((out / "superseded").iterdir())
    assert (moved / "work" / "e1" / "seed-0" / ".unit.json").is_file()
    assert json.loads((out / "raw" / "e1" / "seed-0.json").read_text())["raw"]["value"] == pytest.approx(10.0)


def test_another_budget_in_the_same_folder_is_refused(tmp_path):
    f = Fakes()
    reproduce(SMOKE, tmp_path / "o", only=("E3",), experiments=f.registry(), progress=False)
    with pytest.raises(ValueError, match="differs in: budget"):
        reproduce(get_budget("lab"), tmp_path / "o", only=("E3",), experiments=f.registry(), progress=False)
    assert "e3/seed-2" not in f.calls  # lab lists seed 2 too: refused before it runs


def test_only_selects_experiments_and_their_needs(tmp_path):
    f = Fakes()
    reproduce(SMOKE, tmp_path / "o", only=("E2",), experiments=f.registry(), progress=False)
    assert set(f.calls) == {"base/seed-0", "base/seed-1", "e2/seed-0", "e2/seed-1"}
    assert [c["id"] for c in _report(tmp_path / "o")["claims"]] == ["E2a"]
    # a later run of E1 into the same folder reuses the shared base units
    reproduce(SMOKE, tmp_path / "o", only=("E1",), experiments=f.registry(), progress=False)
    assert f.calls["base/seed-0"] == 1 and f.calls["e1/seed-0"] == 1
    with pytest.raises(ConfigError, match=r"^--only: unknown experiment 'E99' \(known: E1, E2, E3\)$"):
        reproduce(SMOKE, tmp_path / "p", only=("E99",), experiments=f.registry(), progress=False)
    assert not (tmp_path / "p").exists()


def test_a_failing_unit_is_recorded_and_independent_units_still_run(tmp_path):
    f = Fakes()
    f.fail = {"base/seed-1"}
    reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False)
    rep = _report(tmp_path / "o")
    assert f.calls["e3/seed-1"] == 1 and f.calls["e1/seed-0"] == 1
    assert f.calls["e1/seed-1"] == 0 and f.calls["e2/seed-1"] == 0  # they need the failed unit
    assert set(rep["failed"]) == {"base/seed-1", "e1/seed-1", "e2/seed-1"}
    assert "RuntimeError: base/seed-1 broke" in rep["failed"]["base/seed-1"]
    rows = {c["id"]: c for c in rep["claims"]}
    assert rows["E1a"]["status"] == "not measured" and rows["E1a"]["measured"] is None
    assert rows["E3a"]["status"] == "measured"
    row = next(line for line in (tmp_path / "o" / "report.md").read_text().splitlines() if line.startswith("| E2a |"))
    assert "**not measured**" in row and "base/seed-1" in row
    f.fail = set()  # the rerun runs only what failed
    reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False)
    assert f.calls["base/seed-1"] == 2 and f.calls["e3/seed-1"] == 1 and not _report(tmp_path / "o")["failed"]


def test_plan_orders_by_needs_and_rejects_conflicts():
    f = Fakes()
    later = f.experiment("E5", "a", lambda b: [f.unit("z/after", needs=("a/first",)), f.unit("a/first")])
    order, keys = plan([later], SMOKE)
    assert [u.key for u in order] == ["a/first", "z/after"] and keys == {"E5": ["z/after", "a/first"]}
    missing = f.experiment("E6", "a", lambda b: [f.unit("x", needs=("nowhere",))])
    with pytest.raises(ValueError, match=r"^unit x \(of E6\) needs nowhere, which no selected experiment lists$"):
        plan([missing], SMOKE)
    a = f.experiment("E7", "a", lambda b: [f.unit("shared", seed=1)])
    b = f.experiment("E8", "a", lambda b: [f.unit("shared", seed=2)])
    with pytest.raises(ValueError, match=r"^unit shared is listed by E7 and E8 with different settings \(differs in: "
                                         r"seed\)$"):
        plan([a, b], SMOKE)
    cyc = f.experiment("E9", "a", lambda b: [f.unit("p", needs=("q",)), f.unit("q", needs=("p",))])
    with pytest.raises(ValueError, match="cycle"):
        plan([cyc], SMOKE)


def test_budget_full_runs_nothing_and_lists_the_commands(tmp_path):
    f = Fakes()
    e6 = f.experiment("E6", "a", lambda b: [f.unit("never")])
    md = reproduce(get_budget("full"), tmp_path / "o", experiments=collect([e6]), progress=False)
    assert not f.calls
    rep = _report(tmp_path / "o")
    assert rep["claims"][0]["status"] == "not run (full scale: commands only)"
    cmds = rep["experiments"]["E6"]["full_scale"]
    assert {c["run"] for c in cmds} >= {"e6-sft-long", "e6-sft-short", "e6-zero-rl"}
    assert "metareason train --init /data/Qwen2.5-7B" in md.read_text()
    assert "**not run (full scale: commands only)**" in md.read_text()


def test_registry_orders_and_names_a_missing_module():
    f = Fakes()
    names = [f.experiment(n, "a", lambda b: []) for n in ("analogy", "E12", "E2", "E10", "E1")]
    assert list(collect(names)) == ["E1", "E2", "E10", "E12", "analogy"]
    assert sorted(["E3", "analogy", "E11"], key=experiment_order) == ["E3", "E11", "analogy"]
    with pytest.raises(ImportError, match="metareason.reproduce.nothing_here .*cannot be imported"):
        experiments(["metareason.reproduce.nothing_here"])
    assert list(experiments([__name__])) == []  # this module defines no module-level Experiment


def test_cli_bad_budget_and_only(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("METAREASON_DEBUG", raising=False)
    for argv, msg in ((["reproduce", "--budget", "nope", "--out", str(tmp_path / "o")],
                       "metareason: unknown budget 'nope' (known: smoke, lab, full)\n"),
                      (["reproduce", "--budget", "smoke", "--only", "E99", "--out", str(tmp_path / "o")],
                       "metareason: --only: unknown experiment 'E99' (known: "),):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(msg) and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_runs_and_exits_1_when_a_unit_failed(tmp_path, capsys, monkeypatch):
    import metareason.reproduce.registry as registry

    f = Fakes()
    f.fail = {"e3/seed-0"}
    monkeypatch.setattr(registry, "experiments", lambda modules=None: f.registry())
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--budget", "smoke", "--only", "E3,E2", "--out", str(tmp_path / "o")])
    assert stop.value.code == 1 and "e3/seed-0" in capsys.readouterr().err
    assert set(f.calls) == {"base/seed-0", "base/seed-1", "e2/seed-0", "e2/seed-1", "e3/seed-0", "e3/seed-1"}
    f.fail = set()
    main(["reproduce", "--budget", "smoke", "--only", "E3", "E2", "--out", str(tmp_path / "o")])
    assert f.calls["e3/seed-0"] == 2 and f.calls["e3/seed-1"] == 1


def test_progress_prints_one_line_per_unit(tmp_path, capsys):
    f = Fakes()
    reproduce(SMOKE, tmp_path / "o", only=("E3",), experiments=f.registry(), progress=True)
    err = capsys.readouterr().err
    assert all(f"reproduce: e3/seed-{s}: " in err for s in (0, 1))
    reproduce(SMOKE, tmp_path / "o", only=("E3",), experiments=f.registry(), progress=True)
    assert capsys.readouterr().err.count("skipped") == 2


def test_report_only_runs_nothing_and_reports_what_is_finished(tmp_path):
    f = Fakes()
    reproduce(SMOKE, tmp_path / "o", only=("E3",), experiments=f.registry(), progress=False)
    calls = dict(f.calls)
    reproduce(SMOKE, tmp_path / "o", experiments=f.registry(), progress=False, report_only=True)
    assert dict(f.calls) == calls  # nothing ran
    rep = _report(tmp_path / "o")
    status = {c["id"]: c["status"] for c in rep["claims"]}
    assert status == {"E1a": "not run yet", "E1b": "not run yet", "E2a": "not run yet", "E3a": "measured"}
    note = next(c["note"] for c in rep["claims"] if c["id"] == "E1a")
    assert note.startswith("not run yet: 0 of 4 units finished")
    assert "not run yet" in (tmp_path / "o" / "report.md").read_text()
