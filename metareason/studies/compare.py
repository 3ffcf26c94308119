"""`metareason compare`: pseudo-gradient steps (trajectory tokens) beside true gradient steps.

For each question and trajectory of a model's data (lab test questions with the program's
correct and incorrect trajectories, or a Hugging Face model's records):

a. the answer loss after k trajectory tokens (the probe, L-hat) vs after k line-searched
   gradient steps on the question-only answer loss, and after k steps on the trajectory's own
   SFT loss (`metareason.inner.descent`);
b. the exact implicit weight update of every prefix (`metareason.inner.implicit`), verified by
   the patched model's logits, and per token and cumulatively its cosine and norm ratio against
   the true gradient of the answer loss at the same weights, with the loss change it causes;
c. the paper's Proposition 2.1 on the model's first block (`prop21.prop21_on_model`): how far
   each trajectory token's layer-0 input lies outside the span of the question's, and the error
   of the attention-weight construction there.

Writes out/provenance.json (`compare_fingerprint`: a rerun into `out` resumes only with the same
model, data and settings), out/compare.jsonl (one row per trajectory; a rerun skips rows already written), figures,
out/results.json and out/summary.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from metareason.data.named import is_lab_spec, named_records
from metareason.errors import ConfigError, check_int, flag_name
from metareason.inner import SUBSETS, ExampleError, implicit_trajectory, question_descent
from metareason.probe.figures import pyplot, save_figure
from metareason.probe.inputs import examples_from_records
from metareason.probe.loss import ProbeError
from metareason.probe.run import hf_groups
from metareason.runs import data_identity, fingerprint, load, model_identity, open_output
from metareason.stats import mean_interval
from metareason.studies.prop21 import prop21_on_model

__all__ = ["CompareConfig", "run_compare", "compare_fingerprint", "summarise", "CLAIMS"]

#: The paper's claims next to which the measurements are reported.
CLAIMS = {
    "a": "each trajectory token acts like a gradient step on the answer loss (Eq 4): L-hat falls along "
         "correct trajectories as it would under gradient descent",
    "b": "the pseudo-gradient of a token approximates -eta * grad L_q (Eq 4, Delta M ~ -eta grad L)",
    "c": "Prop 2.1: attending to an extra token equals modified W_q, W_k, W_v (exact only inside the span)",
}


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Pseudo- vs true-gradient comparisons for a model (a lab run or a Hugging Face directory)."""

    model: Path
    """A training run directory (`metareason train`) or a Hugging Face model directory."""
    data: str = "lab"
    """"lab" (the run's test questions) or a .jsonl / .parquet file of records (Hugging Face models)."""
    out: Path = Path("runs/compare")
    max_questions: int = 16
    """Questions to compare (each with its correct and, on the lab, an incorrect trajectory)."""
    max_tokens: int = 256
    """Trajectory tokens analysed per trajectory (every token up to this many)."""
    every: int = 1
    """Implicit updates after every `every` tokens (per-token statistics need 1)."""
    steps: int = 16
    """True gradient steps (a.): k = 0..steps."""
    subset: str = "all"
    """Weights the true steps move: "all" or "mlp" (the implicit updates' weights)."""
    think_prefix: str = ""
    """Hugging Face models: text after the chat template's generation prompt (e.g. "<think>\\n")."""
    overwrite: bool = False
    """Move an existing `out` of other settings (another model, data, steps, ...) aside to OUT.old-N."""

    def validate(self, prefix: str = "--") -> None:
        """`ConfigError` naming the flag of the first setting out of range (run by `metareason
        compare` before any work)."""
        for name in ("max_questions", "max_tokens", "every", "steps"):
            check_int(flag_name(prefix, name), getattr(self, name), 1)
        if self.subset not in ("all", "mlp"):
            raise ConfigError(f"{flag_name(prefix, 'subset')} must be 'all' or 'mlp', got {self.subset!r}")


def compare_fingerprint(cfg: CompareConfig, model) -> dict:
    """What the rows of compare.jsonl depend on (`metareason.runs.fingerprint`): the model, the
    data and every setting but `out` / `overwrite`; a folder is resumed only for an equal one."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("model", "data", "out", "overwrite")}
    return fingerprint("compare", model=model_identity(model), data=data_identity(cfg.data), settings=settings)


def _groups(cfg: CompareConfig, model) -> dict[str, list[dict]]:
    """Trajectory groups {name: records with one generation each} of a `metareason.LoadedModel`,
    from `--data` as probe and eval read it (`metareason.data.named`: lab:SPLIT[:FAM], champ, files)."""
    if model.kind == "lab":
        if not is_lab_spec(cfg.data):
            raise ProbeError("a lab model compares on lab data only (--data lab or lab:SPLIT[:FAMILY,...])")
        recs = named_records(cfg.data, lab=model.lab, also_styles=("incorrect",))[:cfg.max_questions]
        return {"correct": [dict(r, generations=[r["trajectory"]], correct=True) for r in recs],
                "incorrect": [dict(r, generations=[r["also"]["incorrect"]], correct=False) for r in recs]}
    groups = hf_groups(named_records(cfg.data)[:cfg.max_questions], model.format)
    return {name.split(" ")[0] if name.startswith("incorrect") else name: recs for name, recs in groups.items()
            if recs}


def _trim(example, max_tokens: int):
    return dataclasses.replace(example, trajectory=example.trajectory[:max_tokens],
                               types=example.types[:max_tokens])


def _row(params, config, example, cfg: CompareConfig) -> dict[str, Any]:
    T = len(example.trajectory)
    ks = np.unique(np.r_[np.arange(0, T + 1, cfg.every), T])
    imp = implicit_trajectory(params, example, ks, config=config)
    desc = question_descent(params, example, config=config, steps=cfg.steps, subset=cfg.subset)
    span = prop21_on_model(params, example, config=config)
    row = {name: (v.tolist() if isinstance(v, np.ndarray) else v) for name, v in imp.items()}
    row.update({name: v.tolist() for name, v in desc.items() if name != "k"})
    row["prop21"] = span
    row["trajectory_length"] = T
    return row


def _band(rows: Sequence[dict], key: str, kmax: int, *, x: str = "k", min_n: int = 3) -> dict:
    """Per k in 0..kmax: mean and 95% interval of rows[key] over the rows that reach k (the k
    that fewer than min_n rows reach are left out, unless there are fewer rows than that)."""
    cols: dict[int, list[float]] = {}
    for r in rows:
        for k, v in zip(r[x], r[key]):
            if k <= kmax and v is not None and math.isfinite(v):
                cols.setdefault(int(k), []).append(float(v))
    need = min(min_n, len(rows))
    ks = sorted(k for k in cols if len(cols[k]) >= need)
    stats = [mean_interval(cols[k]) for k in ks]
    return {"k": ks, "mean": [s.estimate for s in stats], "low": [s.low for s in stats],
            "high": [s.high for s in stats], "n": [s.n for s in stats]}


def summarise(rows_by_group: dict[str, list[dict]], *, steps: int) -> dict[str, Any]:
    """The numbers of the summary from the per-trajectory rows (pure); intervals are
    `metareason.stats.Interval`s (t, over trajectories or tokens; non-finite values dropped)."""
    ci = functools.partial(mean_interval, nan_policy="omit")
    out: dict[str, Any] = {}
    for name, rows in rows_by_group.items():
        if not rows:
            continue
        tok_cos = np.concatenate([np.asarray(r["cos_token"][1:], float) for r in rows])
        last = lambda key: [r[key][-1] for r in rows]  # noqa: E731
        at = lambda key, k: [r[key][min(k, len(r[key]) - 1)] for r in rows]  # noqa: E731
        tok_changes = np.concatenate([np.diff(r["loss_in_context"]) for r in rows])
        tok_first = np.concatenate([np.asarray(r["first_order_token"][1:], float) for r in rows])
        spans = [s for r in rows for s in r["prop21"]["span_residual"]]
        out[name] = {
            "trajectories": len(rows),
            "loss0": ci([r["loss0"] for r in rows]),
            "lhat_final": ci(last("loss_in_context")),
            "lhat_at_steps": ci(at("loss_in_context", steps)),
            "gd_1": ci([r["answer_gd"][1] for r in rows]),
            "gd_final": ci(last("answer_gd")),
            "sft_final": ci(last("answer_sft")),
            "max_logit_error": float(max(max(r["max_logit_error"]) for r in rows)),
            "cos_token": ci(tok_cos),
            "cos_token_positive": float(np.mean(tok_cos > 0)) if tok_cos.size else math.nan,
            "cos_cumulative_final": ci(last("cos_cumulative")),
            # rows written before the closest exact update existed lack it (a resumed folder): NaN, "n/a"
            "cos_closest_final": ci([r["cos_closest"][-1] if "cos_closest" in r else math.nan for r in rows]),
            "null_share_final": ci([r["null_share"][-1] if "null_share" in r else math.nan for r in rows]),
            "norm_cumulative_final": ci(last("norm_cumulative")),
            "first_order_vs_actual": (float(np.corrcoef(tok_first, tok_changes)[0, 1])
                                      if tok_changes.size > 2 and tok_changes.std() > 0 and tok_first.std() > 0
                                      else math.nan),
            "span_residual": ci(spans),
            "prop21_relative_error": ci([r["prop21"]["relative_error"] for r in rows]),
        }
    return out


def _figures(rows_by_group: dict[str, list[dict]], out: Path, steps: int, max_tokens: int) -> dict[str, str]:
    plt = pyplot()
    figs = {}
    colors = dict(zip(rows_by_group, ["C0", "C3", "C2", "C1"]))

    def band(ax, b, label, color, style="-"):
        if not b["k"]:
            return
        ax.plot(b["k"], b["mean"], style, color=color, label=label)
        ax.fill_between(b["k"], b["low"], b["high"], color=color, alpha=0.15)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in rows_by_group.items():
        c = colors[name]
        band(axes[0], _band(rows, "loss_in_context", steps), f"{name}: k trajectory tokens (L-hat)", c)
        band(axes[1], _band(rows, "loss_in_context", max_tokens), f"{name}: k trajectory tokens (L-hat)", c)
    ref = next(iter(rows_by_group.values()))
    for ax in axes:
        band(ax, _band([dict(r, k=list(range(steps + 1))) for r in ref], "answer_gd", steps),
             "k gradient steps on the answer loss", "k", "--")
        band(ax, _band([dict(r, k=list(range(steps + 1))) for r in ref], "answer_sft", steps),
             "k gradient steps on the trajectory (SFT)", "0.5", ":")
        ax.set_xlabel("k (tokens or steps)")
        ax.set_ylabel("question-only answer NLL")
    axes[0].set_title(f"first {steps} tokens / steps")
    axes[1].set_title("the whole trajectory")
    axes[0].legend(fontsize=7)
    figs["loss_vs_steps"] = str(save_figure(fig, out / "loss_vs_steps.png"))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, rows in rows_by_group.items():
        c = colors[name]
        band(axes[0], _band(rows, "cos_token", max_tokens), f"{name}: per token", c)
        band(axes[0], _band(rows, "cos_cumulative", max_tokens), f"{name}: cumulative", c, "--")
        band(axes[1], _band(rows, "norm_cumulative", max_tokens), f"{name}: cumulative", c, "--")
        band(axes[1], _band(rows, "norm_token", max_tokens), f"{name}: per token", c)
        d = [dict(r, change=list(np.asarray(r["loss_token_step"]) - r["loss0"])) for r in rows]
        band(axes[2], _band(d, "change", max_tokens), f"{name}: token step alone", c)
        d = [dict(r, change=list(np.asarray(r["loss_in_context"]) - r["loss0"])) for r in rows]
        band(axes[2], _band(d, "change", max_tokens), f"{name}: all tokens so far", c, "--")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[2].axhline(0, color="k", lw=0.5)
    axes[0].set_ylabel("cosine with -grad L (MLP weights)")
    axes[1].set_ylabel("|dW| / |grad L|")
    axes[2].set_ylabel("answer loss change from W")
    for ax in axes:
        ax.set_xlabel("trajectory tokens k")
        ax.legend(fontsize=7)
    figs["implicit_vs_gradient"] = str(save_figure(fig, out / "implicit_vs_gradient.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in rows_by_group.items():
        L = len(rows[0]["cos_cumulative_layer"][0])
        means = [np.mean([r["cos_cumulative_layer"][-1][l] for r in rows]) for l in range(L)]
        ax.plot(range(L), means, "o-", color=colors[name], label=name)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine of dW(whole trajectory) with -grad L")
    ax.legend()
    figs["cosine_by_layer"] = str(save_figure(fig, out / "cosine_by_layer.png"))
    return figs


def _fmt(ci) -> str:
    m, lo, hi = ci[:3]
    return "n/a" if not math.isfinite(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def _write_summary(res: dict, out: Path) -> None:
    lines = ["# metareason compare: trajectory tokens vs true gradient steps", "", res["source"], ""]
    lines += ["| | " + " | ".join(res["groups"]) + " |", "|---|" + "---|" * len(res["groups"])]
    labels = [
        ("trajectories", "trajectories", str),
        ("question-only answer loss at W", "loss0", _fmt),
        (f"L-hat after {res['steps']} tokens", "lhat_at_steps", _fmt),
        ("L-hat after the whole trajectory", "lhat_final", _fmt),
        ("answer loss after 1 true step on it", "gd_1", _fmt),
        (f"answer loss after {res['steps']} true steps on it", "gd_final", _fmt),
        (f"answer loss after {res['steps']} SFT steps on the trajectory", "sft_final", _fmt),
        ("implicit update: max logit error (exactness)", "max_logit_error", lambda v: f"{v:.2e}"),
        ("per-token cosine with -grad L", "cos_token", _fmt),
        ("share of tokens with cosine > 0", "cos_token_positive", lambda v: f"{v:.3f}"),
        ("whole-trajectory cosine with -grad L", "cos_cumulative_final", _fmt),
        ("whole-trajectory cosine, exact update closest to -grad L", "cos_closest_final", _fmt),
        ("share of -grad L the exact updates' freedom reaches", "null_share_final", _fmt),
        ("whole-trajectory norm ratio dW / grad L", "norm_cumulative_final", _fmt),
        ("corr(first-order prediction, actual per-token change)", "first_order_vs_actual",
         lambda v: f"{v:.3f}"),
        ("Prop 2.1: token outside the question's span (fraction of norm)", "span_residual", _fmt),
        ("Prop 2.1: relative error of the construction (attention output)", "prop21_relative_error", _fmt),
    ]
    for label, key, f in labels:
        lines.append(f"| {label} | " + " | ".join(f(res["groups"][g][key]) for g in res["groups"]) + " |")
    lines += ["", "Means with 95% intervals over trajectories (per-token rows: over tokens). Gradients and implicit "
              "updates are over every layer's MLP kernels; the implicit update is the minimum-norm exact one "
              "(any update that also reproduces the logits differs from it by a null-space term), so its cosine "
              "with -grad L is that of the smallest weight change the trajectory amounts to; the closest exact "
              "update is the member of the affine family of exact updates (`metareason.inner.implicit`) whose "
              "cosine with -grad L is largest (a supremum when not attained).", "",
              "## The paper's claims", ""]
    lines += [f"- ({k}) {v}" for k, v in CLAIMS.items()]
    lines += ["", "## Figures", ""] + [f"![{k}]({Path(v).name})" for k, v in res["figures"].items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def run_compare(cfg: CompareConfig, *, model=None) -> dict[str, Any]:
    """Runs a. to c. for every trajectory (resuming from out/compare.jsonl) and writes the
    figures, out/results.json and out/summary.md. Returns the results dict."""
    if cfg.max_questions < 1 or cfg.every < 1 or cfg.steps < 1 or cfg.max_tokens < 1:
        raise ExampleError("max_questions, every, steps and max_tokens must be >= 1")
    if cfg.subset not in SUBSETS:
        raise ExampleError(f"unknown weight subset {cfg.subset!r} (known: {', '.join(SUBSETS)})")
    t0 = time.perf_counter()
    model = (model or load(cfg.model)).with_think_prefix(cfg.think_prefix)
    kind = model.kind
    # exactness needs float32 weights and compute
    config = dataclasses.replace(model.config, param_dtype="float32", compute_dtype="float32")
    params = jax.tree.map(lambda x: x.astype(np.float32), model.params)
    groups = _groups(cfg, model)
    out = open_output(cfg.out, compare_fingerprint(cfg, model), resume=True, overwrite=cfg.overwrite,
                      created_by="compare",
                      inputs=(model.provenance.get("path"), None if cfg.data == "lab" else cfg.data))
    path = out / "compare.jsonl"
    done: dict[tuple[str, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["group"], r["id"])] = r
    todo = [(g, r) for g, recs in groups.items() for r in recs]
    with path.open("a") as f:
        for g, r in tqdm(todo, desc="compare", unit="trajectory"):
            rid = str(r.get("id"))
            if (g, rid) in done:
                continue
            ex = _trim(examples_from_records(model.format, [r])[0], cfg.max_tokens)
            row = dict(group=g, id=rid, **_row(params, config, ex, cfg))
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[(g, rid)] = row
    rows = {g: [done[(g, str(r.get("id")))] for r in recs] for g, recs in groups.items()}
    res = {"groups": summarise(rows, steps=cfg.steps), "steps": cfg.steps, "config": {
        k: str(v) for k, v in dataclasses.asdict(cfg).items()}}
    res["figures"] = _figures(rows, out, cfg.steps, cfg.max_tokens)
    res["source"] = (f"{'lab run' if kind == 'lab' else 'Hugging Face model'} {cfg.model}; "
                     f"{sum(len(v) for v in rows.values())} trajectories; true steps move {cfg.subset} weights; "
                     f"{time.perf_counter() - t0:.0f} s")
    (out / "results.json").write_text(json.dumps(res, indent=1))
    _write_summary(res, out)
    return res
