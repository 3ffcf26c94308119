"""The report of `metareason reproduce`: report.json, report.md, EXPERIMENTS.md and the wall-time
table of BENCHMARKS.md, all from one dict (the runner's record of a run).

report.json: {"budget", "only", "machine", "command", "wall_seconds", "units": {key: {"status":
"ran"|"resumed"|"failed", "seconds", "error"?}}, "experiments": {name: {"title", "units",
"unit_seconds", "summarise_seconds", "seconds", "full_scale"?}}, "claims": [ClaimResult.as_dict()
plus "experiment" and "status" ("measured", NOT_MEASURED, NOT_RUN, FULL_SCALE_STATUS)], "failed": {key: error}}.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Mapping

__all__ = ["NOT_MEASURED", "NOT_RUN", "FULL_SCALE_STATUS", "machine", "write_report", "report_markdown", "claims_table",
           "write_experiments_md", "benchmarks_table", "format_measured"]

NOT_MEASURED = "not measured"
NOT_RUN = "not run yet"
FULL_SCALE_STATUS = "not run (full scale: commands only)"


def machine() -> dict:
    """What the run ran on: platform, Python, CPU count, JAX's backend and devices."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    try:
        import jax

        devices = jax.devices()
        info.update(jax=jax.__version__, backend=jax.default_backend(), devices=len(devices),
                    device_kind=devices[0].device_kind if devices else "")
    except Exception as e:  # noqa: BLE001 - the report is written anyway
        info["jax"] = f"unavailable ({type(e).__name__})"
    return info


def machine_line(m: Mapping[str, Any]) -> str:
    dev = f"{m.get('devices', '?')} x {m.get('device_kind', '?')} ({m.get('backend', '?')})" if "backend" in m else ""
    return ", ".join(x for x in (m.get("platform", ""), f"{m.get('cpus', '?')} CPUs", dev,
                                 f"Python {m.get('python', '?')}", f"JAX {m.get('jax', '?')}") if x)


def _num(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def format_measured(measured: Mapping[str, Any] | None) -> str:
    """"0.123 [0.05, 0.2]" (estimate and interval), "-" when not measured."""
    if measured is None:
        return "-"
    return f"{_num(measured['mean'])} [{_num(measured['low'])}, {_num(measured['high'])}]"


def _is_interval(v: Any) -> bool:
    return isinstance(v, Mapping) and {"mean", "low", "high"} <= set(v)


def extra_lines(extra: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """A claim's extra numbers as nested markdown bullets: intervals as "m [low, high] (n, method)",
    numbers to 3 significant digits, long lists shortened."""
    out = []
    for key, v in extra.items():
        if _is_interval(v):
            out.append(f"{indent}- {key}: {format_measured(v)} (n {v.get('n', '?')}, {v.get('method', '')})")
        elif isinstance(v, Mapping):
            out += [f"{indent}- {key}:"] + extra_lines(v, indent + "  ")
        elif isinstance(v, float):
            out.append(f"{indent}- {key}: {_num(v)}")
        elif isinstance(v, (list, tuple)) and len(v) > 8:
            out.append(f"{indent}- {key}: {_cell(json.dumps(list(v[:8]), default=str))[:-1]}, ... ({len(v)} values)]")
        else:
            out.append(f"{indent}- {key}: {_cell(json.dumps(v, default=str))}")
    return out


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def claims_table(claims: list[dict]) -> str:
    """The markdown table with one row per claim: id, the paper's statement and number, the measured
    number with its 95% interval, n, seeds, the verdict (bold; the status when not measured), note."""
    lines = ["| claim | paper | paper's number | measured (95% interval) | n | seeds | verdict | note |",
             "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        status = c.get("status", "measured")
        shown = c["verdict"] if status == "measured" else status
        lines.append(f"| {_cell(c['id'])} | {_cell(c['paper'])} | {_cell(c['paper_number'])} | "
                     f"{format_measured(c['measured'])} | {c['n']} | {c['seeds']} | **{_cell(shown)}** | "
                     f"{_cell(c['note'])} |")
    return "\n".join(lines)


def _unit_total(report: Mapping[str, Any]) -> float:
    """Sum of every unit's own seconds (resumed units: the run that finished them)."""
    return float(sum(u.get("seconds", 0.0) for u in report.get("units", {}).values()))


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def report_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the header (budget, command, machine, wall time), the claims table, then per
    experiment its figures and details (units with their time, measures, extra numbers, the
    full-scale commands of budget "full")."""
    b = report["budget"]
    text = [f"# metareason reproduce: budget {b['name']}", "",
            f"Command: `{report.get('command', '')}`  ", f"Machine: {machine_line(report.get('machine', {}))}  ",
            f"Wall time: {_seconds(report['wall_seconds'])} (this invocation; the units' own times sum to "
            f"{_seconds(_unit_total(report))}); seeds {', '.join(map(str, b['seeds']))}; "
            f"{b['samples']} samples per question; k {', '.join(map(str, b['ks']))}", "",
            "A claim is **supported** when the 95% interval of the measured difference lies entirely on the "
            "paper's side of 0, **contradicted** when entirely on the other side, else **inconclusive** "
            "(`metareason.reproduce.base.verdict`, fixed before any run).", ""]
    if report.get("failed"):
        text += ["**Failed:** " + "; ".join(f"{k}: {_cell(v)}" for k, v in report["failed"].items()), ""]
    if not report["claims"]:
        text += ["Nothing selected: no experiment is registered (metareason.reproduce.registry.MODULES) or "
                 "--only named none.", ""]
    else:
        text += [claims_table(report["claims"]), ""]
    for name, exp in report["experiments"].items():
        text += [f"## {name}: {exp['title']}", "", f"Wall time {_seconds(exp['seconds'])} (units "
                 f"{_seconds(exp['unit_seconds'])}, summary {_seconds(exp['summarise_seconds'])}).", ""]
        claims = [c for c in report["claims"] if c.get("experiment") == name]
        for fig in dict.fromkeys(c["figure"] for c in claims if c.get("figure")):
            text += [f"![{name}]({fig})", ""]
        for c in claims:
            text.append(f"- **{c['id']}** ({c['verdict'] if c.get('status') == 'measured' else c.get('status')}): "
                        f"{_cell(c['measure'])}; direction {c['direction']:+d}")
            text += extra_lines(c.get("extra") or {})
        units = report["units"]
        if exp["units"]:
            text += ["", "Units: " + ", ".join(
                f"`{k}` ({units[k]['status']}, {_seconds(units[k]['seconds'])})" for k in exp["units"] if k in units)]
        if "full_scale" in exp:
            text += ["", "Full-scale commands (experiments/FULL_SCALE.md):" if exp["full_scale"] else
                     "No full-scale command in experiments/full_scale.py."]
            for cmd in exp["full_scale"]:
                text += ["", f"{cmd['run']}:", "", "```bash", cmd["command"], "```"]
        text.append("")
    return "\n".join(text)


def write_report(report: dict, out: Path) -> Path:
    """Adds the machine and the command line to `report`, writes out/report.json and out/report.md
    (atomically); returns the report.md path."""
    report = {**report, "machine": report.get("machine") or machine(),
              "command": report.get("command") or _command(report)}
    for name, text in (("report.json", json.dumps(report, indent=2, default=str)), ("report.md",
                                                                                      report_markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return out / "report.md"


def _command(report: Mapping[str, Any]) -> str:
    only = f" --only {','.join(report['only'])}" if report.get("only") else ""
    return f"metareason reproduce --budget {report['budget']['name']}{only} --out OUT"


def _load(report_json: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    return report_json if isinstance(report_json, Mapping) else json.loads(Path(report_json).read_text())


def write_experiments_md(report_json: str | Path | Mapping[str, Any], path: str | Path,
                         discussion: str | Path | None = None) -> Path:
    """Writes EXPERIMENTS.md from a report.json (path or dict): a header naming the command and the
    machine, the claims table, per experiment its figure, the `discussion` markdown file's text
    (written by people after the run: the likely reasons for disagreements; marked as such), and a
    closing pointer to the superseded single-seed tables (experiments/SUPERSEDED.md). Returns `path`."""
    report = _load(report_json)
    path = Path(path)
    # figures are relative to the report's folder; from EXPERIMENTS.md they are under that folder
    where = os.path.relpath(Path(report_json).parent, path.absolute().parent) if isinstance(report_json, (str, Path)) \
        else "."
    text = ["# Experiments: the paper's claims, reproduced", "",
            f"Generated by `metareason reproduce --budget {report['budget']['name']}` "
            f"(`{report.get('command', _command(report))}`) on {machine_line(report.get('machine', {}))}, "
            f"the units' times summing to {_seconds(_unit_total(report))} (BENCHMARKS.md has the wall clock). "
            "Do not edit by hand: rerun the command and "
            "`metareason.reproduce.report.write_experiments_md(OUT/report.json, 'EXPERIMENTS.md')`.", "",
            "Verdict rule (fixed in code before the run, `metareason.reproduce.base.verdict`): **supported** "
            "when the 95% interval of the measured difference lies entirely on the paper's side of 0, "
            "**contradicted** when entirely on the other side, else **inconclusive**.", "",
            claims_table(list(report["claims"])), ""]
    for name, exp in report["experiments"].items():
        figs = dict.fromkeys(c["figure"] for c in report["claims"] if c.get("experiment") == name and c.get("figure"))
        if figs:
            text += [f"## {name}: {exp['title']}", ""] + [f"![{name}]({Path(where) / fig})" for fig in figs] + [""]
    if discussion is not None:
        text += ["## Discussion (written after the run; not generated)", "",
                 f"From [{Path(discussion).name}]"
                 f"({os.path.relpath(Path(discussion).absolute(), path.absolute().parent)}).",
                 "", Path(discussion).read_text().strip(), ""]
    text += ["## Superseded", "",
             "The earlier single-seed tables of this file are kept in "
             "[experiments/SUPERSEDED.md](experiments/SUPERSEDED.md); the rows above replace them.", ""]
    path.write_text("\n".join(text))
    return path


def benchmarks_table(report_json: str | Path | Mapping[str, Any]) -> str:
    """A markdown table for BENCHMARKS.md: wall time per experiment (units, summary, total) of a
    report, with its budget and machine; units shared by several experiments count in each."""
    report = _load(report_json)
    lines = [f"`metareason reproduce --budget {report['budget']['name']}` on "
             f"{machine_line(report.get('machine', {}))} (a unit shared by several experiments counts in each; "
             "resumed units count the time of the run that finished them).", "",
             "| experiment | units | units wall time | summary | total |", "|---|---|---|---|---|"]
    for name, exp in report["experiments"].items():
        lines.append(f"| {name} | {len(exp['units'])} | {_seconds(exp['unit_seconds'])} | "
                     f"{_seconds(exp['summarise_seconds'])} | {_seconds(exp['seconds'])} |")
    lines.append(f"| all (wall clock of this invocation) | {len(report['units'])} | | | "
                 f"{_seconds(report['wall_seconds'])} |")
    return "\n".join(lines)
