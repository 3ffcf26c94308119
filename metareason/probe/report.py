"""The probe experiments end to end: curves (JSONL), figures (PNG), results (JSON) and a markdown
summary that states each of the paper's claims next to what was measured.

`analyse` works for any model and any trajectories (grouped into correct / incorrect);
`lab_trajectories` collects them for a lab model (program-written and the model's own samples),
and `lab_extras` adds the lab-only experiments (E1 landscape, E12 efficiency).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from metareason.format import LabFormat
from metareason.model import ModelConfig
from metareason.probe import analysis, figures
from metareason.probe.inputs import Example, probe_examples, trajectory_cuts
from metareason.stats import mean_interval

__all__ = ["analyse", "lab_trajectories", "lab_extras", "write_summary", "CLAIMS"]

#: The paper's claims (PAPER.md), keyed by experiment.
CLAIMS = {
    "E1": "The answer loss given the question only is a landscape over parameter space; the trajectory's "
          "L-hat path descends it (Fig 2).",
    "E2": "L-hat falls along correct trajectories, like gradient descent (Fig 3).",
    "E3": "Along incorrect trajectories L-hat w.r.t. the true answer shows no downward trend (Fig 16).",
    "E4": "No-thinking converges fast but stalls higher; the end-of-thinking delimiter causes a sharp drop (Fig 5).",
    "E5": "Reflection tokens ('Wait', 'Alternatively', ...) change the objective far more than the average "
          "token (Fig 6).",
    "E12": "At equal token counts, answers after summarised trajectories beat no-thinking (Figs 10, 11).",
}


def _fmt_ci(t) -> str:
    m, lo, hi = t[:3]
    return "n/a" if math.isnan(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def analyse(params: Any, config: ModelConfig, groups: dict[str, Sequence[Example]], out: str | Path, *,
            delimiter_examples: Sequence[Example] | None = None, every: int = 1, alpha: float = 0.1,
            method: str = "cache", batch_size: int = 16, progress: bool = True) -> dict:
    """E2, E3, E4, E5 on trajectories grouped by name. A group whose name starts with "correct"
    counts as correct (E2), one starting with "incorrect" as incorrect (E3).

    delimiter_examples: the same examples as groups' first correct group, built with the
    end-of-thinking delimiter before the template (E4); None skips the delimiter comparison.
    Writes out/curves.jsonl and figures; returns the results dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[dict]] = {}
    for name, exs in groups.items():
        if not exs:
            curves[name] = []
            continue
        cuts = [trajectory_cuts(e, every=every) for e in exs]
        curves[name] = probe_examples(params, config, exs, cuts, batch_size=batch_size, method=method,
                                      progress=progress)
    with open(out / "curves.jsonl", "w") as f:
        for name, cs in curves.items():
            for c in cs:
                f.write(json.dumps(dict(c, group=name)) + "\n")
    res: dict[str, Any] = {"groups": {n: len(c) for n, c in curves.items()}, "ema_alpha": alpha, "every": every}
    bands = {n: analysis.mean_band(c, alpha=alpha) for n, c in curves.items() if c}
    res["trend"] = {n: analysis.trend_summary(c) for n, c in curves.items() if c}
    res["leak_cut"] = _leak_cut_views(groups, curves)
    res["figures"] = {}
    correct = {n: b for n, b in bands.items() if n.startswith("correct")}
    incorrect = {n: b for n, b in bands.items() if n.startswith("incorrect")}
    first = next((n for n in curves if n.startswith("correct") and curves[n]), None)
    if first:
        # the first correct group's mean curve (unsmoothed, 20 points): the path drawn on the E1 landscape
        res["mean_correct_curve"] = analysis.mean_band(curves[first], points=20)["mean"]
    if correct:
        res["figures"]["E2"] = str(figures.plot_bands(correct, out / "e2_descent.png",
                                                      title="L-hat along correct trajectories (E2, Fig 3)"))
        res["figures"]["E2_examples"] = str(figures.plot_examples(
            curves[first][:4], out / "e2_examples.png", title=f"single trajectories ({first})"))
    if incorrect:
        both = {**correct, **incorrect}
        res["figures"]["E3"] = str(figures.plot_bands(both, out / "e3_incorrect.png",
                                                      title="correct vs incorrect trajectories (E3, Fig 16)"))
    if every == 1:
        all_curves = [c for cs in curves.values() for c in cs]
        if all_curves:
            stats = analysis.token_type_changes(all_curves, offsets=range(-2, 5))
            floored = analysis.token_type_changes(all_curves, floor=analysis.REFLECTION_FLOOR)
            res["E5"] = {"stats": {t: {str(o): list(v) for o, v in d.items()} for t, d in stats.items()
                                   if t != "ratio"}, "ratio": stats["ratio"],
                         "floor": analysis.REFLECTION_FLOOR,
                         "stats_floored": {t: list(d[0]) for t, d in floored.items() if t != "ratio"},
                         "ratio_floored": floored["ratio"]}
            res["figures"]["E5"] = str(figures.plot_token_types(stats, out / "e5_token_types.png"))
    if delimiter_examples and first:
        cuts = [trajectory_cuts(e, every=every) for e in delimiter_examples]
        with_d = probe_examples(params, config, delimiter_examples, cuts, batch_size=batch_size, method=method,
                                progress=progress)
        without = curves[first]
        res["E4"] = {"delimiter_effect": analysis.delimiter_effect(without, with_d),
                     "no_thinking": mean_interval([c["loss"][0] for c in without], nan_policy="omit"),
                     "full_thinking": mean_interval([c["loss"][-1] for c in without], nan_policy="omit"),
                     "no_thinking_with_delimiter": mean_interval([c["loss"][0] for c in with_d], nan_policy="omit"),
                     "full_thinking_with_delimiter": mean_interval([c["loss"][-1] for c in with_d], nan_policy="omit")}
        res["figures"]["E4"] = str(figures.plot_bands(
            {f"{first}: template only": bands[first],
             f"{first}: </think> + template": analysis.mean_band(with_d, alpha=alpha)},
            out / "e4_delimiter.png", title="thinking and the end-of-thinking delimiter (E4, Fig 5)"))
    return res


def _leak_cut_views(groups: dict[str, Sequence[Example]], curves: dict[str, list[dict]]) -> dict:
    """Per group: E2/E3's trend on curves cut before the answer first appears in the trajectory
    (`analysis.leak_cut`), the mean curve's shape cut and uncut (`analysis.curve_shape`), and the
    mean share of the trajectory before the cut."""
    out = {}
    for name, cs in curves.items():
        if not cs:
            continue
        cuts = [analysis.leak_cut(e.trajectory, e.probe[e.targets]) for e in groups[name]]
        cut = analysis.cut_curves(cs, cuts)
        shape = analysis.curve_shape(analysis.mean_band(cut), cut)
        full = analysis.curve_shape(analysis.mean_band(cs), cs)
        share = [k / max(len(e.trajectory), 1) for k, e in zip(cuts, groups[name])]
        out[name] = {"trend": analysis.trend_summary(cut), "shape": shape, "shape_uncut": full,
                     "cut_fraction": float(np.mean(share))}
    return out


def lab_trajectories(params: Any, config: ModelConfig, records: Sequence[dict], *, samples: int = 2,
                     temperature: float = 1.0, seed: int = 0, max_new_tokens: int = 384) -> dict[str, list[dict]]:
    """Trajectory records for the lab analyses, from test `records` with
    `lab_records(..., also_styles=("incorrect",))`: "correct (written)" (the program's long
    trajectories), "incorrect (written)" (the program's incorrect ones), and the model's own
    samples (`samples` per question at `temperature`) split by their final answer into
    "correct (sampled)" / "incorrect (sampled)" (by `LabFormat.verdict`)."""
    from metareason.sample import SamplingConfig, generate_all

    fmt = LabFormat()

    base = [dict(r, generations=[r["trajectory"]]) for r in records]
    groups: dict[str, list[dict]] = {
        "correct (written)": [dict(r, correct=True) for r in base],
        "incorrect (written)": [dict(r, generations=[r["also"]["incorrect"]], correct=False, style="incorrect")
                                for r in records if "also" in r and "incorrect" in r["also"]],
        "correct (sampled)": [], "incorrect (sampled)": []}
    if samples:
        prompts = [fmt.prompt(r) for r in records for _ in range(samples)]
        sampling = SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens,
                                  stop_tokens=fmt.stop_tokens, pad_id=fmt.pad_id)
        outs = generate_all(params, config, prompts, sampling, key=jax.random.key(seed))
        for i in range(len(prompts)):
            r = records[i // samples]
            ids = [int(t) for t in outs[i]]
            if fmt.end_think not in ids:
                continue  # never ended its thinking: no trajectory to probe
            traj = fmt.decode(ids[:ids.index(fmt.end_think)])
            if not traj.strip():
                continue
            ok = fmt.verdict(ids, r).correct
            groups["correct (sampled)" if ok else "incorrect (sampled)"].append(
                dict(r, id=f"{r['id']}-s{i % samples}", generations=[traj], correct=ok, style="sampled"))
    return groups


def lab_extras(params: Any, config: ModelConfig, records: Sequence[dict], out: str | Path, *,
               mean_curve: Sequence[float] | None = None, grid: int = 13, span: float = 1.0,
               landscape_questions: int = 16, budgets: Sequence[int] = (0, 8, 16, 32, 64, 96, 128, 192),
               seed: int = 0) -> dict:
    """E1 (landscape around theta for the question-only answer loss, the mean correct L-hat curve
    placed on it) and E12 (budget forcing / summaries / no thinking) for a lab model."""
    from metareason.probe.efficiency import efficiency_table
    from metareason.probe.inputs import make_batch
    from metareason.probe.landscape import loss_surface, place_path, random_directions

    out = Path(out)
    fmt = LabFormat()
    exs = [fmt.probe_example(r["question"], r["trajectory"], r["answer"]) for r in records[:landscape_questions]]
    batch = make_batch(exs, [np.zeros(1, np.int32)] * len(exs))
    k1, k2 = jax.random.split(jax.random.key(seed))
    d1, d2 = random_directions(params, k1), random_directions(params, k2)
    ab = np.linspace(-span, span, grid)
    surface = loss_surface(params, config, batch, d1, d2, ab, ab)
    centre = surface[grid // 2, grid // 2]
    res: dict[str, Any] = {"E1": {"grid": grid, "span": span, "questions": len(exs), "surface": surface.tolist(),
                                  "at_theta": float(centre), "grid_min": float(surface.min())}}
    pts = None
    if mean_curve is not None:
        pts = place_path(surface, ab, ab, mean_curve)
        res["E1"]["trajectory_final"] = float(mean_curve[-1])
        res["E1"]["trajectory_start"] = float(mean_curve[0])
    res["figures"] = {"E1": str(figures.plot_landscape(surface, ab, ab, out / "e1_landscape.png", points=pts))}
    summaries = [r["also"]["summary"] for r in records] if all("summary" in r.get("also", {}) for r in records) \
        else None
    rows = efficiency_table(params, config, records, budgets=budgets, summaries=summaries)
    res["E12"] = rows
    res["figures"]["E12"] = str(figures.plot_efficiency(rows, out / "e12_efficiency.png"))
    return res


def _verdicts(res: dict) -> dict[str, str]:
    """What was measured, one line per experiment (numbers only; the reader compares with the claim)."""
    lines = {}
    trend = res.get("trend", {})
    e2 = [f"{n}: {t['share_falling']:.0%} of {t['n']} falling (rho < 0), median rho {t['median_rho']:.2f}, "
          f"L-hat {t['first'][0]:.2f} -> {t['last'][0]:.2f}" for n, t in trend.items() if n.startswith("correct")]
    e3 = [f"{n}: {t['share_falling']:.0%} of {t['n']} falling, median rho {t['median_rho']:.2f}, "
          f"L-hat {t['first'][0]:.2f} -> {t['last'][0]:.2f}" for n, t in trend.items() if n.startswith("incorrect")]
    if e2:
        lines["E2"] = "; ".join(e2)
    if e3:
        lines["E3"] = "; ".join(e3)
    for n, v in res.get("leak_cut", {}).items():
        key = "E2" if n.startswith("correct") else "E3" if n.startswith("incorrect") else None
        if key in lines:
            sh, t = v["shape"], v["trend"]
            lines[key] += (f"; {n} cut before the answer first appears (at {v['cut_fraction']:.0%} of the trajectory "
                           f"on average): median rho {t['median_rho']:.2f}, peak at x {sh['peak_x']:.2f}, falls from x "
                           f"{sh['falls_from']:.2f}, {sh['monotone_share']:.0%} of steps falling, drop "
                           f"{_fmt_ci(sh['drop'])} (uncut: peak {v['shape_uncut']['peak_x']:.2f}, falls from "
                           f"{v['shape_uncut']['falls_from']:.2f})")
    if "E4" in res:
        e = res["E4"]
        lines["E4"] = (f"L-hat with no thinking {_fmt_ci(e['no_thinking'])} vs after the full trajectory "
                       f"{_fmt_ci(e['full_thinking'])}; adding </think> before the template changes L-hat by "
                       f"{_fmt_ci(e['delimiter_effect']['end'])} at the end and "
                       f"{_fmt_ci(e['delimiter_effect']['start'])} at the start")
    if "E5" in res:
        st, ratio = res["E5"]["stats"], res["E5"]["ratio"]
        med = st["all"]["0"][4]
        parts = [f"{t} {_fmt_ci(st[t]['0'])} (x{ratio[t]:.2f} the average; median {st[t]['0'][4]:.3f}, "
                 f"x{st[t]['0'][4] / med:.2f} the average token's median)"
                 for t in ("reflection", "connective", "delimiter") if t in st]
        lines["E5"] = "mean relative change caused by the token (95% CI): " + ", ".join(parts) + \
            f"; average token {_fmt_ci(st['all']['0'])} (median {st['all']['0'][4]:.3f})"
        if "stats_floored" in res["E5"]:
            fl, rf = res["E5"]["stats_floored"], res["E5"]["ratio_floored"]
            lines["E5"] += f"; with L floored at {res['E5']['floor']} nats: " + ", ".join(
                f"{t} {_fmt_ci(fl[t])} (x{rf[t]:.2f})" for t in ("reflection", "connective", "delimiter")
                if t in fl) + \
                f", average token {_fmt_ci(fl['all'])}"
        if "reflection" in st:
            peak = max(st["reflection"], key=lambda o: st["reflection"][o][0])
            lines["E5"] += (f"; around reflection words the mean change peaks {int(peak):+d} tokens from the word "
                            f"({_fmt_ci(st['reflection'][peak])})")
    if "E1" in res:
        e = res["E1"]
        s = f"question-only loss at theta {e['at_theta']:.2f}, lowest on the {e['grid']}x{e['grid']} grid " \
            f"{e['grid_min']:.2f}"
        if "trajectory_final" in e:
            s += f"; mean correct trajectory L-hat {e['trajectory_start']:.2f} -> {e['trajectory_final']:.2f}"
        lines["E1"] = s
    if "E12" in res:
        rows = res["E12"]
        by = {r["mode"]: r for r in rows}
        s = ", ".join(f"{r['mode']}{'' if r['budget'] is None else ' ' + str(r['budget'])}: "
                      f"acc {r['accuracy']:.2f} at {r['mean_tokens']:.0f} tokens" for r in rows)
        if "summary" in by:
            near = min((r for r in rows if r["mode"] == "budget"),
                       key=lambda r: abs(r["mean_tokens"] - by["summary"]["mean_tokens"]), default=None)
            if near:
                s += (f". Summary {by['summary']['accuracy']:.2f} vs no-thinking {by['none']['accuracy']:.2f} vs "
                      f"budget forcing at {near['mean_tokens']:.0f} tokens {near['accuracy']:.2f}")
        lines["E12"] = s
    return lines


def write_summary(res: dict, out: str | Path, *, title: str, preamble: str = "") -> Path:
    """out/results.json and out/summary.md: each claim of the paper next to what was measured."""
    out = Path(out)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float))
    lines = [f"# {title}", "", preamble, "", "| experiment | the paper claims | measured here |", "|---|---|---|"]
    for key, measured in _verdicts(res).items():
        lines.append(f"| {key} | {CLAIMS[key]} | {measured} |")
    lines += ["", "## Figures", ""]
    for key, path in res.get("figures", {}).items():
        lines.append(f"- {key}: ![{key}]({Path(path).name})")
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
