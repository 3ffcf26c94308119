"""`metareason reproduce`: runs the units of the selected experiments once each, resumably, and
writes one report.

    path = reproduce(get_budget("smoke"), "runs/reproduce-smoke", only=("E2", "E7"))

Layout of OUT:
    provenance.json      the command and the budget (`open_output`: another budget is refused)
    reproduce.json       the budget and every unit's settings with their digest
    work/<key>/          each unit's folder (a unit may resume there after an interruption), with
                         .unit.json: the settings digest and need ids it was started with
    raw/<key>.json       each finished unit's result: {"key", "settings", "digest", "id", "needs" (the
                         id of each need's record it read), "finished", "seconds", "raw"},
                         written atomically (temp file + rename)
    superseded/<time>/   raw/ and work/ of units moved away by --supersede, with superseded.json
    figures/             the experiments' PNGs
    report.md, report.json

Before anything runs: the units of the selected experiments are collected (one key listed with two
different settings: error naming both experiments), ordered by `needs` (a need no selected
experiment lists: error) and checked against raw/: a finished unit with the same settings is
skipped (never rerun); one with other settings, or computed from a result of a need that has
changed since (`finished_units`), is refused (one line naming the unit and why; nothing runs,
nothing is written), or with --supersede moved to superseded/ with its dependents and rerun. A
unit that raises is recorded, the units that do not need it still run, and its experiments'
claims are reported "not measured". Budget "full" runs nothing: the report lists the full-scale
commands of experiments/full_scale.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from metareason.errors import ConfigError
from metareason.reproduce.base import Budget, Claim, ClaimResult, Experiment, Unit, get_budget
from metareason.reproduce.report import FULL_SCALE_STATUS, NOT_MEASURED, NOT_RUN, write_report
from metareason.runs.provenance import differences, digest, fingerprint, open_output

__all__ = ["ReproduceConfig", "reproduce", "plan", "select", "check_raws", "finished_units", "supersede", "UNIT_MARK",
           "full_scale_commands", "run_reproduce"]


@dataclasses.dataclass
class ReproduceConfig:
    """`metareason reproduce`: every experiment of the paper with its seeds and a verdict per claim."""

    out: Path
    """Output folder (rerun with the same --out to resume: finished units are never rerun)."""
    budget: str = "lab"
    """smoke (the whole path in minutes, numbers meaningless), lab (the real run), full (commands only)."""
    only: tuple[str, ...] = ()
    """Experiments to run, e.g. E2,E7 (comma or space separated; default: all), with the units they need."""
    report_only: bool = False
    """Run nothing: write the report of the units finished so far (an experiment with unfinished
    units is reported as not run yet; rerun without this flag to resume)."""

    supersede: bool = False
    """Move finished units that can no longer be reused (a changed setting, or computed from a need
    that changed) and everything depending on them to OUT/superseded/<time>/, then rerun them
    (default: refuse such a folder with one line)."""

    def validate(self) -> None:
        get_budget(self.budget)

    def names(self) -> tuple[str, ...]:
        return tuple(n for part in self.only for n in re.split(r"[,\s]+", part) if n)


def run_reproduce(cfg: ReproduceConfig, *, experiments: Mapping[str, Experiment] | None = None) -> Path:
    """Runs `cfg` (the command line's entry); returns the report.md path."""
    cfg.validate()
    return reproduce(get_budget(cfg.budget), cfg.out, only=cfg.names(), experiments=experiments,
                     report_only=cfg.report_only, supersede_stale=cfg.supersede)


def _json(obj: Any) -> Any:
    """`obj` as plain JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def select(known: Mapping[str, Experiment], only: Sequence[str]) -> list[Experiment]:
    """The experiments named in `only` (all of `known` when empty), in `known`'s order; an unknown
    name is a one-line ConfigError listing the known ones."""
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ConfigError(f"--only: unknown experiment {', '.join(map(repr, unknown))} "
                          f"(known: {', '.join(known) or 'none'})")
    return [e for n, e in known.items() if not only or n in only]


def plan(selected: Sequence[Experiment], budget: Budget) -> tuple[list[Unit], dict[str, list[str]]]:
    """The units of `selected` at `budget`, deduplicated by key and ordered so that every unit comes
    after its `needs` (ties keep the listing order); and {experiment name: its unit keys}.
    ValueError: a key listed with different settings (naming both experiments), a need no selected
    experiment lists, a cycle of needs."""
    units: dict[str, Unit] = {}
    owner: dict[str, str] = {}
    keys_of: dict[str, list[str]] = {}
    for exp in selected:
        keys_of[exp.name] = []
        for u in exp.units(budget):
            if not isinstance(u.key, str) or not u.key or u.key.startswith("/") or ".." in u.key.split("/"):
                raise ValueError(f"{exp.name}: unit key {u.key!r} is not a relative path-like name")
            if u.key in units:
                diff = differences(_json(units[u.key].settings), _json(u.settings))
                if diff:
                    raise ValueError(f"unit {u.key} is listed by {owner[u.key]} and {exp.name} with different "
                                     f"settings (differs in: {', '.join(diff)})")
            else:
                units[u.key], owner[u.key] = u, exp.name
            if u.key not in keys_of[exp.name]:
                keys_of[exp.name].append(u.key)
    order: list[Unit] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(key: str, chain: tuple[str, ...]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise ValueError(f"the needs of units form a cycle: {' -> '.join(chain + (key,))}")
        state[key] = 1
        for need in units[key].needs:
            if need not in units:
                raise ValueError(f"unit {key} (of {owner[key]}) needs {need}, which no selected experiment lists")
            visit(need, chain + (key,))
        state[key] = 2
        order.append(units[key])

    for key in units:
        visit(key, ())
    return order, keys_of


def _raw_path(out: Path, key: str) -> Path:
    return out / "raw" / f"{key}.json"


UNIT_MARK = ".unit.json"
"""Written into work/<key>/ when a unit starts: its settings' digest and the ids of the need records
it read, so an unfinished unit whose settings or needs changed since is caught before it resumes."""


def _read_mark(out: Path, key: str) -> dict | None:
    path = out / "work" / key / UNIT_MARK
    try:
        mark = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return mark if isinstance(mark, dict) else None


def _read_raw(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is unreadable ({type(e).__name__}); move it away to rerun its unit") from None
    if not isinstance(saved, dict) or "settings" not in saved or "raw" not in saved:
        raise ValueError(f"{path} is not a unit result; move it away to rerun its unit")
    return saved


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else float("inf")


def finished_units(out: Path, units: Sequence[Unit]) -> tuple[dict[str, dict], dict[str, str]]:
    """({key: saved record} of the units finished in `out` that can be reused, {key: why not} of
    those finished that cannot). `units` in `plan`'s order (needs first). A finished unit cannot be
    reused when its settings differ from the unit's, or when it was computed from a result of a
    need that is stale, gone, or not the one it read (records name the id of each need's record;
    records written before ids existed fall back to: the need's raw file is newer than its own). An
    unfinished unit (no record; its work folder's UNIT_MARK) cannot resume when it was started with
    other settings or from another result of a need; it is listed with the stale ones."""
    saved: dict[str, dict] = {}
    for u in units:
        path = _raw_path(out, u.key)
        if path.is_file():
            saved[u.key] = _read_raw(path)
    done: dict[str, dict] = {}
    stale: dict[str, str] = {}
    for u in units:
        if u.key not in saved:
            mark = _read_mark(out, u.key)  # an unfinished unit's work folder
            if mark is not None:
                why = ("started with other settings (its work folder is unfinished)"
                       if mark.get("digest") != digest(_json(u.settings)) else "")
                for need, read in (mark.get("needs") or {}).items():
                    if not why and need in u.needs and (need not in done or read != done[need].get("id")):
                        why = f"started from another result of {need} (its work folder is unfinished)"
                if why:
                    stale[u.key] = why
            continue
        rec = saved[u.key]
        diff = differences(rec["settings"], _json(u.settings))
        why = f"run with other settings (differs in: {', '.join(diff)})" if diff else ""
        for need in u.needs:
            if why:
                break
            read = rec.get("needs", {}).get(need) if isinstance(rec.get("needs"), dict) else None
            if need in stale:
                why = f"computed from {need}, which is stale ({stale[need].split(' (')[0]})"
            elif need not in done:
                why = f"computed from a result of {need} that is gone (it will be rerun)"
            elif read is not None and read != done[need].get("id"):
                why = f"computed from another result of {need} (rerun since)"
            elif read is None and _mtime(_raw_path(out, need)) > _mtime(_raw_path(out, u.key)):
                why = f"older than the result of {need} it was computed from"
        if why:
            stale[u.key] = why
        else:
            done[u.key] = rec
    return done, stale


def check_raws(out: Path, units: Sequence[Unit]) -> dict[str, dict]:
    """{key: saved record} of the units already finished in `out` that can be reused. A finished
    unit that cannot (other settings, or computed from another result of a need: `finished_units`):
    ValueError naming the first such unit and why."""
    done, stale = finished_units(out, units)
    if stale:
        key, why = next(iter(stale.items()))
        more = f" (and {len(stale) - 1} more unit(s))" if len(stale) > 1 else ""
        raise ValueError(f"unit {key} in {out} was {why}{more}; choose another --out, pass --supersede to move "
                         f"it and what depends on it to {out}/superseded/, or move raw/{key}.json away to rerun it")
    return done


def supersede(out: Path, stale: Mapping[str, str], *, say=print) -> Path | None:
    """Moves the raw results and work folders of the `stale` units (key -> why) of `out` to
    OUT/superseded/<UTC time>/ (raw/, work/, the figures of the time, superseded.json with the
    reasons); nothing is deleted. Returns that folder (None when `stale` is empty)."""
    if not stale:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = out / "superseded" / stamp
    n = 1
    while dest.exists():
        dest, n = out / "superseded" / f"{stamp}-{n}", n + 1
    for key, why in stale.items():
        for sub, name in (("raw", f"{key}.json"), ("work", key)):
            src = out / sub / name
            if src.exists():
                target = dest / sub / name
                target.parent.mkdir(parents=True, exist_ok=True)
                src.rename(target)
        say(f"reproduce: {key}: {why}; moved to {dest.relative_to(out)}")
    if (out / "figures").is_dir():
        shutil.copytree(out / "figures", dest / "figures")
    _write_atomic(dest / "superseded.json", {"moved_at": stamp, "units": dict(stale)})
    return dest


def _write_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def full_scale_commands() -> dict[str, list[tuple[str, str]]]:
    """{experiment name: [(run name, command), ...]} from experiments/full_scale.py of the source
    checkout ({} when the package is installed without it)."""
    path = Path(__file__).resolve().parents[2] / "experiments" / "full_scale.py"
    if not path.is_file():
        return {}
    name = "_metareason_full_scale"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    out: dict[str, list[tuple[str, str]]] = {}
    for run in module.runs():
        for name in dict.fromkeys(re.findall(r"\bE\d+\b", run.experiments)):
            out.setdefault(name, []).append((run.name, run.command))
    return out


def _bar(total: int, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="reproduce", unit="unit", file=sys.stderr)


def _say(bar, message: str) -> None:
    """One progress line on stderr (above the bar, when there is one)."""
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def _not_measured(claims: Sequence[Claim], status: str, note: str) -> list[dict]:
    return [{**ClaimResult(c, None, "inconclusive", note=note).as_dict(), "status": status} for c in claims]


def reproduce(budget: Budget, out: str | Path, *, only: Sequence[str] = (),
              experiments: Mapping[str, Experiment] | None = None, progress: bool = True,
              report_only: bool = False, supersede_stale: bool = False) -> Path:
    """Runs the experiments `only` names (all when empty) of `experiments` (default: the registry) at
    `budget` into `out` and writes report.md / report.json there; returns the report.md path.
    report_only: run no unit; experiments with unfinished units are reported as not run yet.
    supersede_stale: finished units that cannot be reused (`finished_units`) are moved to
    OUT/superseded/<time>/ (`supersede`) and rerun, instead of refusing the folder.
    Failed units are listed under "failed" in report.json (the command line then exits 1)."""
    if experiments is None:
        from metareason.reproduce.registry import experiments as registry

        experiments = registry()
    selected = select(experiments, tuple(only))
    out = Path(out).absolute()
    full = budget.name == "full"
    units, keys_of = ([], {e.name: [] for e in selected}) if full else plan(selected, budget)
    if out.is_dir() and supersede_stale:
        done, stale = finished_units(out, units)
    else:
        done, stale = (check_raws(out, units) if out.is_dir() else {}), {}
    # nothing has been written yet: the folder is opened (or refused) now
    open_output(out, fingerprint("reproduce", settings={"budget": dataclasses.asdict(budget)}), resume=True,
                overwrite=False, created_by="reproduce")
    supersede(out, stale, say=lambda m: print(m, file=sys.stderr, flush=True))
    manifest_path = out / "reproduce.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest["budget"] = _json(dataclasses.asdict(budget))
    manifest.setdefault("units", {}).update(
        {u.key: {"settings": _json(u.settings), "digest": digest(_json(u.settings))} for u in units})
    _write_atomic(manifest_path, manifest)
    for sub in ("work", "raw", "figures"):
        (out / sub).mkdir(exist_ok=True)

    started = time.time()
    records: dict[str, dict] = {}
    failed: dict[str, str] = {}
    bar = _bar(len(units), progress and bool(units))
    try:
        for u in units:
            if u.key in done:
                records[u.key] = {"status": "resumed", "seconds": done[u.key].get("seconds", 0.0)}
                if progress:
                    _say(bar, f"reproduce: {u.key}: done before ({records[u.key]['seconds']:.1f} s), skipped")
            elif report_only:
                records[u.key] = {"status": "pending", "seconds": 0.0}
            elif bad := [n for n in u.needs if n in failed]:
                failed[u.key] = f"needs {bad[0]}, which failed"
                records[u.key] = {"status": "failed", "seconds": 0.0, "error": failed[u.key]}
            else:
                folder = out / "work" / u.key
                folder.mkdir(parents=True, exist_ok=True)
                mark = {"key": u.key, "digest": digest(_json(u.settings)),
                        "needs": {n: done[n].get("id") for n in u.needs}}
                _write_atomic(folder / UNIT_MARK, mark)
                inputs = {n: (done[n]["raw"]) for n in u.needs}
                t0 = time.perf_counter()
                try:
                    raw = u.run(folder, inputs)
                    seconds = time.perf_counter() - t0
                    record = {**mark, "settings": _json(u.settings), "id": uuid.uuid4().hex,
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "seconds": seconds, "raw": _json(raw)}
                    _write_atomic(_raw_path(out, u.key), record)
                    done[u.key] = record
                    records[u.key] = {"status": "ran", "seconds": seconds}
                    if progress:
                        _say(bar, f"reproduce: {u.key}: {seconds:.1f} s")
                except Exception as e:  # noqa: BLE001 - recorded; the independent units still run
                    seconds = time.perf_counter() - t0
                    failed[u.key] = " ".join(f"{type(e).__name__}: {e}".split())
                    records[u.key] = {"status": "failed", "seconds": seconds, "error": failed[u.key],
                                      "traceback": traceback.format_exc()}
                    _say(bar, f"reproduce: {u.key}: FAILED after {seconds:.1f} s: {failed[u.key]}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    commands = full_scale_commands() if full else {}
    exps: dict[str, dict] = {}
    claims: list[dict] = []
    for exp in selected:
        keys = keys_of[exp.name]
        info: dict[str, Any] = {"title": exp.title, "units": keys,
                                "unit_seconds": sum(records[k]["seconds"] for k in keys), "summarise_seconds": 0.0}
        if full:
            info["full_scale"] = [{"run": r, "command": c} for r, c in commands.get(exp.name, [])]
            claims += [{**d, "experiment": exp.name} for d in _not_measured(
                exp.claims, FULL_SCALE_STATUS, "full scale: see the commands under this experiment" if
                info["full_scale"] else "full scale: no command in experiments/full_scale.py")]
        elif pending := [k for k in keys if records[k]["status"] == "pending"]:
            claims += [{**d, "experiment": exp.name} for d in _not_measured(
                exp.claims, NOT_RUN, f"not run yet: {len(keys) - len(pending)} of {len(keys)} units finished "
                                     f"(rerun the command without --report-only to resume)")]
        elif bad := [k for k in keys if k in failed]:
            claims += [{**d, "experiment": exp.name} for d in _not_measured(
                exp.claims, NOT_MEASURED, f"not measured: unit {bad[0]} failed ({failed[bad[0]]})")]
        else:
            t0 = time.perf_counter()
            try:
                results = list(exp.summarise(budget, {k: done[k]["raw"] for k in keys}, out / "figures"))
                claims += [{**r.as_dict(), "status": "measured", "experiment": exp.name} for r in results]
                missing = [c for c in exp.claims if c.id not in {r.claim.id for r in results}]
                claims += [{**d, "experiment": exp.name} for d in _not_measured(
                    missing, NOT_MEASURED, "not measured: the experiment returned no result for it")]
            except Exception as e:  # noqa: BLE001 - recorded like a failed unit
                failed[f"summarise/{exp.name}"] = " ".join(f"{type(e).__name__}: {e}".split())
                print(f"reproduce: summarise {exp.name}: FAILED: {failed[f'summarise/{exp.name}']}",
                      file=sys.stderr, flush=True)
                claims += [{**d, "experiment": exp.name} for d in _not_measured(
                    exp.claims, NOT_MEASURED, f"not measured: summarising failed ({failed[f'summarise/{exp.name}']})")]
            info["summarise_seconds"] = time.perf_counter() - t0
        info["seconds"] = info["unit_seconds"] + info["summarise_seconds"]
        exps[exp.name] = info
    report = {"budget": _json(dataclasses.asdict(budget)), "only": list(only),
              "wall_seconds": time.time() - started, "units": records, "experiments": exps, "claims": claims,
              "failed": failed}
    return write_report(report, out)
