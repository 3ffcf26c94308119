"""E8 (the paper's Fig 4): community models evaluated and probed on one data set with one setting.

    from metareason.studies.community import ModelEntry, compare_models
    compare_models([ModelEntry("distill-7b", "/data/DeepSeek-R1-Distill-Qwen-7B", "off-policy"),
                    ModelEntry("orz-7b", "/data/Open-Reasoner-Zero-7B", "on-policy")],
                   "aime24.jsonl", "runs/e8", n=32, ks=(1, 4, 8, 16), probe_questions=30, max_new_tokens=16384)
    python -m metareason.studies.community --model distill-7b:off-policy:/data/... --data aime24.jsonl --out runs/e8

Each model is a Hugging Face folder (or a metareason run) with a training paradigm the user gives
("off-policy": trained on others' trajectories, SFT / distillation; "on-policy": RL on its own
samples; "base"). Every model is evaluated by `metareason.evaluate.run.run_eval` (n samples per
question, Pass@k and mG-Pass@k) and probed by `metareason.probe.run.run_probe` (L-hat along the
data's reference trajectories) with the same settings, each in its own folder:

    out/
      provenance.json     the data and the settings (a rerun with other settings is refused)
      models/NAME/eval/   metareason eval's folder (samples.jsonl, results.json; resumed per question)
      models/NAME/probe/  metareason probe's folder (curves.jsonl, results.json; reused when finished)
      comparison.json     per model: paradigm, Pass@k / mG-Pass@k (mean over questions, 95% bootstrap interval),
                          per-question Pass@k, the probe's summary; and off-policy minus on-policy
      table.md            the same as the Fig 4 table
      fig4_community.png  Pass@k per model by paradigm, and the probe's mean drop of L-hat

The probe's summary per model, over the first correct group's curves (the data's reference
trajectories): the share of falling curves (Spearman rho of L-hat against position < 0; Wilson
interval) and the mean drop L-hat(no thinking) - L-hat(whole trajectory) in nats (95% t interval).
The paradigms are compared on the questions every model answered: per question, the mean Pass@k of
the off-policy models minus that of the on-policy ones (`metareason.stats.paired_difference`,
bootstrap over questions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import tokenizers

from metareason.evaluate.passk import mg_pass_at_k, pass_at_k
from metareason.evaluate.run import EvalConfig, run_eval
from metareason.model import ModelConfig, init, save_hf_checkpoint
from metareason.probe.figures import pyplot, save_figure
from metareason.probe.analysis import trend
from metareason.probe.run import ProbeConfig, probe_fingerprint, run_probe
from metareason.runs import data_identity, fingerprint, load, open_output
from metareason.runs.provenance import PROVENANCE, differences
from metareason.stats import Interval, bootstrap_interval, mean_interval, paired_difference, rate_interval

__all__ = ["PARADIGMS", "ModelEntry", "CommunityError", "check_models", "compare_models", "model_summary",
           "probe_summary", "paradigm_difference", "per_question_pass", "write_bpe_tokenizer", "write_random_hf_model",
           "main"]

PARADIGMS = ("off-policy", "on-policy", "base")
"""Training paradigms a model can be labelled with (off-policy: SFT / distillation on others'
trajectories; on-policy: RL on its own samples; base: neither)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class CommunityError(ValueError):
    """Bad input to the community comparison (one line, names what is wrong)."""


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model of the comparison: `name` (letters, digits, . _ -; its folder under out/models),
    `path` (a Hugging Face folder or a metareason run) and `paradigm` (one of `PARADIGMS`)."""

    name: str
    path: Path
    paradigm: str

    @classmethod
    def parse(cls, spec: str) -> "ModelEntry":
        """"NAME:PARADIGM:PATH" (the path may hold further colons)."""
        parts = spec.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise CommunityError(f"a model is NAME:PARADIGM:PATH, got {spec!r}")
        return cls(parts[0], Path(parts[2]), parts[1])


def check_models(models: Sequence[ModelEntry]) -> tuple[ModelEntry, ...]:
    """The entries, checked: at least one; names valid and distinct; paradigms known; each path a
    folder with config.json. CommunityError (one line) for the first problem."""
    models = tuple(models)
    if not models:
        raise CommunityError("no models to compare (give at least one NAME:PARADIGM:PATH)")
    seen = set()
    for m in models:
        if not isinstance(m.name, str) or not _NAME.match(m.name):
            raise CommunityError(f"model name {m.name!r} must be letters, digits, '.', '_' or '-'")
        if m.name in seen:
            raise CommunityError(f"model name {m.name!r} is given twice")
        seen.add(m.name)
        if m.paradigm not in PARADIGMS:
            raise CommunityError(f"model {m.name}: unknown paradigm {m.paradigm!r} (known: {', '.join(PARADIGMS)})")
        path = Path(m.path)
        if not path.is_dir():
            raise CommunityError(f"model {m.name}: {path} is not a directory")
        if not (path / "config.json").is_file():
            raise CommunityError(f"model {m.name}: {path} has no config.json (not a model folder)")
    return models


# ---------------------------------------------------------------------------------------- summaries

def _rows(eval_dir: Path, dataset: str) -> list[dict]:
    rows = []
    for line in (eval_dir / "samples.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("dataset") == dataset:
            rows.append(row)
    return rows


def per_question_pass(rows: Sequence[dict], k: int, *, metric: str = "pass") -> dict[str, float]:
    """{question id: Pass@k (metric "pass") or mG-Pass@k ("mg-pass")} from samples.jsonl rows."""
    n = np.asarray([len(r["correct"]) for r in rows])
    c = np.asarray([sum(r["correct"]) for r in rows])
    f = pass_at_k if metric == "pass" else mg_pass_at_k
    return {r["id"]: float(v) for r, v in zip(rows, f(n, c, k))}


def probe_summary(curves: Sequence[dict]) -> dict[str, Any]:
    """The probe's summary over curves (dicts with "k", "loss"): "n"; "falling" (the share whose
    L-hat falls along the trajectory, Spearman rho < 0 over the curves where rho is defined, Wilson
    interval); "drop" (L-hat at the first cut minus at the last, nats, 95% t interval); "first",
    "last" (mean L-hat there, t intervals)."""
    t = [trend(c) for c in curves]
    rho = np.asarray([x["rho"] for x in t], np.float64)
    ok = np.isfinite(rho)
    falling = rate_interval(int((rho[ok] < 0).sum()), int(ok.sum())) if ok.any() else None
    first = [x["first"] for x in t]
    last = [x["last"] for x in t]
    return {"n": len(t), "falling": falling.as_dict() if falling else None,
            "drop": mean_interval(np.subtract(first, last), nan_policy="omit").as_dict() if t else None,
            "first": mean_interval(first, nan_policy="omit").as_dict() if t else None,
            "last": mean_interval(last, nan_policy="omit").as_dict() if t else None}


def _probe_curves(probe_dir: Path) -> tuple[str | None, list[dict]]:
    """(group, curves) of the first correct group with curves in probe_dir/curves.jsonl."""
    by: dict[str, list[dict]] = {}
    for line in (probe_dir / "curves.jsonl").read_text().splitlines():
        c = json.loads(line)
        by.setdefault(c["group"], []).append(c)
    group = next((g for g in by if g.startswith("correct") and by[g]), None)
    return group, (by[group] if group else [])


def model_summary(eval_dir: Path, probe_dir: Path | None, dataset: str, ks: Sequence[int]) -> dict[str, Any]:
    """One model's row of the table from its eval and probe folders: "eval" (Pass@k, mG-Pass@k and
    accuracy: means over questions with 95% percentile-bootstrap intervals, which stay inside
    [0, 1]; questions; mean length in tokens), "per_question" ({"pass@K": {id: value}}, also
    "mg-pass@K"), and "probe": `probe_summary` of the first correct group's curves (with "group";
    absent without a probe folder)."""
    rows = _rows(Path(eval_dir), dataset)
    if not rows:
        raise CommunityError(f"{eval_dir}/samples.jsonl has no rows of {dataset!r}")
    per_q = {**{f"pass@{k}": per_question_pass(rows, k) for k in ks},
             **{f"mg-pass@{k}": per_question_pass(rows, k, metric="mg-pass") for k in ks}}
    ev: dict[str, Any] = {"questions": len(rows), "samples_per_question": min(len(r["correct"]) for r in rows)}
    ev.update({m: bootstrap_interval(list(v.values())).as_dict() for m, v in per_q.items()})
    ev["accuracy"] = bootstrap_interval([float(np.mean(r["correct"])) for r in rows]).as_dict()
    ev["mean_length"] = float(np.mean([np.mean(r["lengths"]) for r in rows]))
    out = {"eval": ev, "per_question": per_q}
    if probe_dir is not None:
        group, curves = _probe_curves(Path(probe_dir))
        out["probe"] = dict(probe_summary(curves), group=group)
    return out


def paradigm_difference(rows: Mapping[str, Mapping[str, Any]], metric: str, *, a: str = "off-policy",
                        b: str = "on-policy") -> Interval | None:
    """Paired over the questions every model answered: per question, the mean `metric` (e.g.
    "pass@8") of the models of paradigm `a` minus that of paradigm `b`; the 95% percentile-bootstrap
    interval of the mean difference (`paired_difference(..., method="bootstrap")`).
    `rows`: name -> {"paradigm", "per_question": {metric: {id: value}}}. None unless both
    paradigms have a model."""
    ma = [r for r in rows.values() if r["paradigm"] == a]
    mb = [r for r in rows.values() if r["paradigm"] == b]
    if not ma or not mb:
        return None
    ids = sorted(set.intersection(*(set(r["per_question"][metric]) for r in (*ma, *mb))))
    if not ids:
        return None
    va = np.mean([[r["per_question"][metric][i] for i in ids] for r in ma], axis=0)
    vb = np.mean([[r["per_question"][metric][i] for i in ids] for r in mb], axis=0)
    return paired_difference(va, vb, method="bootstrap")


# ---------------------------------------------------------------------------------------- the harness

def _finished(folder: Path, fp: dict, created_by: str) -> bool:
    """Whether `folder` holds a finished output (results.json) of `created_by` with fingerprint `fp`."""
    prov = folder / PROVENANCE
    if not (prov.is_file() and (folder / "results.json").is_file()):
        return False
    try:
        saved = json.loads(prov.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return saved.get("created_by") == created_by and not differences(saved.get("fingerprint", {}), fp)


def _pct(iv: Mapping[str, float] | None) -> str:
    if not iv or not math.isfinite(iv["mean"]):
        return "-"
    lo, hi = iv["low"], iv["high"]
    return (f"{100 * iv['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if math.isfinite(lo)
            else f"{100 * iv['mean']:.1f}")


def _num(iv: Mapping[str, float] | None) -> str:
    if not iv or not math.isfinite(iv["mean"]):
        return "-"
    lo, hi = iv["low"], iv["high"]
    return f"{iv['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else f"{iv['mean']:.3f}"


def _table(res: dict) -> str:
    ks = res["settings"]["ks"]
    cols = [f"pass@{k}" for k in ks] + [f"mg-pass@{k}" for k in ks]
    lines = ["| model | paradigm | questions | " + " | ".join(cols) + " | falling L-hat | L-hat drop (nats) |",
             "|" + "---|" * (len(cols) + 5)]
    for name, r in res["models"].items():
        ev, pr = r["eval"], r.get("probe") or {}
        lines.append(f"| {name} | {r['paradigm']} | {ev['questions']} | " + " | ".join(_pct(ev[c]) for c in cols)
                     + f" | {_pct(pr.get('falling'))} (n={pr.get('n', 0)}) | {_num(pr.get('drop'))} |")
    diff = [f"| {m} | {_pct(iv)} |" for m, iv in res["off_minus_on"].items() if iv]
    text = "\n".join(lines) + "\n"
    if diff:
        text += ("\nOff-policy minus on-policy (per question, the paradigm's mean over its models; paired "
                 "95% bootstrap interval over questions, percentage points):\n\n| metric | difference |\n|---|---|\n" + "\n".join(diff) + "\n")
    return text


def _figure(res: dict, path: Path) -> Path:
    plt = pyplot()

    k = max(res["settings"]["ks"])
    colours = {"off-policy": "tab:blue", "on-policy": "tab:orange", "base": "tab:gray"}
    names = list(res["models"])
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(names) + 3), 3.5))
    for ax, (what, get, scale) in zip(axes, [
            (f"Pass@{k} (%)", lambda r: r["eval"][f"pass@{k}"], 100),
            ("L-hat drop (nats)", lambda r: (r.get("probe") or {}).get("drop"), 1)]):
        for i, name in enumerate(names):
            r = res["models"][name]
            iv = get(r)
            if not iv or not math.isfinite(iv["mean"]):
                continue
            err = [[scale * (iv["mean"] - iv["low"])], [scale * (iv["high"] - iv["mean"])]] \
                if math.isfinite(iv["low"]) else None
            ax.bar(i, scale * iv["mean"], yerr=err, color=colours[r["paradigm"]], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(what)
    from matplotlib.patches import Patch  # matplotlib: only when drawing
    present = [p for p in PARADIGMS if any(r["paradigm"] == p for r in res["models"].values())]
    axes[0].legend([Patch(color=colours[p]) for p in present], present, fontsize=7)
    fig.suptitle("community models by training paradigm (E8, Fig 4)")
    save_figure(fig, path)
    return path


def compare_models(models: Sequence[ModelEntry], data: str, out: str | Path, *, n: int = 8,
                   ks: Sequence[int] = (1, 4, 8), probe_questions: int = 30, max_new_tokens: int = 384,
                   max_questions: int = 0, temperature: float = 1.0, think_prefix: str = "", every: int = 1,
                   batch_size: int = 64, seed: int = 0, model_overrides: str = "") -> dict[str, Any]:
    """Evaluates and probes every model on `data` with the same settings; writes comparison.json,
    table.md and fig4_community.png under `out` and returns the comparison.

    data: a .jsonl / .parquet file of records (question, answer, trajectory; `metareason.data.manual`)
    or a named data set ("champ"). n samples per question at `temperature`, up to `max_new_tokens`
    each, on the first `max_questions` questions (0: all); ks: the k of Pass@k / mG-Pass@k (<= n);
    probe_questions: records probed (their reference trajectories and generations, every `every`
    tokens); model_overrides: numerics NAME=VALUE,... (`ModelConfig.NUMERICS`, e.g.
    param_dtype=bfloat16) applied to every model. A model's eval folder is resumed per question and its probe folder reused when it is
    finished with the same fingerprint (model, data, settings); other settings in `out` are refused
    (`metareason.runs.ProvenanceError`)."""
    models = check_models(models)
    ks = tuple(int(k) for k in ks)
    if n < 1 or not ks or any(k < 1 or k > n for k in ks):
        raise CommunityError(f"every k must be in [1, n={n}], got {ks}")
    if probe_questions < 1:
        raise CommunityError(f"probe_questions must be >= 1, got {probe_questions}")
    if data != "champ" and not Path(data).is_file():
        raise CommunityError(f"data {data!r} is not a file (nor 'champ')")
    settings = {"n": n, "ks": list(ks), "probe_questions": probe_questions, "max_new_tokens": max_new_tokens,
                "max_questions": max_questions, "temperature": temperature, "think_prefix": think_prefix,
                "every": every, "batch_size": max(batch_size, n), "seed": seed, "model_overrides": model_overrides}
    out = open_output(out, fingerprint("community", data=data_identity(data), settings={
        k: v for k, v in settings.items() if k != "ks"}), resume=True, overwrite=False, created_by="community",
        inputs=[data if data != "champ" else None, *(m.path for m in models)])
    res: dict[str, Any] = {"data": data, "settings": settings, "models": {}}
    for m in models:
        folder = out / "models" / m.name
        model = load(m.path, **ModelConfig.parse_overrides(model_overrides))
        run_eval(EvalConfig(model=Path(m.path), data=(data,), out=folder / "eval", n=n, k=ks,
                            temperature=temperature, max_new_tokens=max_new_tokens, max_questions=max_questions,
                            batch_size=max(batch_size, n), think_prefix=think_prefix, seed=seed), model=model)
        pcfg = ProbeConfig(model=Path(m.path), data=data, out=folder / "probe", max_questions=probe_questions,
                           every=every, samples=0, landscape_grid=0, think_prefix=think_prefix, seed=seed,
                           model_overrides=model_overrides)
        probed = model if model.kind == "lab" else model.with_think_prefix(think_prefix)
        if not _finished(folder / "probe", probe_fingerprint(pcfg, probed), "probe"):
            if (folder / "probe").exists() and not (folder / "probe" / "results.json").exists():
                shutil.rmtree(folder / "probe")  # a probe cut short: it has no partial results to keep
            run_probe(pcfg, model=model)
        res["models"][m.name] = {"paradigm": m.paradigm, "path": str(m.path),
                                 **model_summary(folder / "eval", folder / "probe", data, ks)}
    res["off_minus_on"] = {}
    for metric in [f"pass@{k}" for k in ks] + [f"mg-pass@{k}" for k in ks]:
        iv = paradigm_difference(res["models"], metric)
        res["off_minus_on"][metric] = iv.as_dict() if iv is not None else None
    (out / "comparison.json").write_text(json.dumps(res, indent=2, default=float))
    (out / "table.md").write_text(
        f"# Community models (E8, Fig 4) on {data}\n\nn = {n} samples per question, temperature {temperature}, "
        f"up to {max_new_tokens} new tokens; percentages with 95% bootstrap intervals over questions; falling: share "
        f"of probed trajectories whose L-hat falls (Spearman rho < 0, Wilson interval); drop: L-hat without "
        f"thinking minus after the whole trajectory.\n\n" + _table(res))
    res["figure"] = str(_figure(res, out / "fig4_community.png"))
    return res


# ---------------------------------------------------------------------------------------- tiny random models

_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
_CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
           "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def write_bpe_tokenizer(folder: str | Path, corpus: Sequence[str], *, vocab_size: int = 300,
                        specials: Sequence[str] = tuple(_SPECIALS), chat_template: str = _CHATML,
                        bos_token: str | None = None) -> Path:
    """A byte-level BPE tokenizer trained on `corpus` (no hub access; at most `vocab_size` tokens,
    `specials` first) written to `folder` (created if missing) as tokenizer.json plus a
    tokenizer_config.json with `chat_template`, `bos_token`, eos "<|im_end|>" and pad
    "<|endoftext|>". Returns `folder` (absolute)."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    tok.pre_tokenizer = byte_level(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(list(corpus), tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), initial_alphabet=byte_level.alphabet()))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": chat_template, "bos_token": bos_token,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return folder


def write_random_hf_model(folder: str | Path, corpus: Sequence[str], *, seed: int = 0, vocab_size: int = 300,
                          hidden_size: int = 32, num_layers: int = 2, max_position_embeddings: int = 1024) -> Path:
    """A random tiny Qwen2 written as a Hugging Face folder (config.json, model.safetensors, a
    byte-level BPE tokenizer.json trained on `corpus` with ChatML specials, tokenizer_config.json
    with a ChatML template; `write_bpe_tokenizer`): a stand-in for a community model (weights
    `init(config, key(seed))`). `folder` must not exist. Returns it (absolute)."""
    folder = Path(folder).absolute()
    config = ModelConfig(family="qwen2", vocab_size=vocab_size, hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_layers=num_layers, num_heads=4, num_kv_heads=2,
                         max_position_embeddings=max_position_embeddings)
    save_hf_checkpoint(folder, config, init(config, jax.random.key(seed)))
    return write_bpe_tokenizer(folder, list(corpus) + ["\\boxed{0123456789}"], vocab_size=vocab_size)


# ---------------------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    """python -m metareason.studies.community --model NAME:PARADIGM:PATH ... --data FILE --out DIR."""
    p = argparse.ArgumentParser(prog="python -m metareason.studies.community", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=[], help="NAME:PARADIGM:PATH (repeat)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--k", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--probe-questions", type=int, default=30)
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--max-questions", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--think-prefix", default="")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-overrides", default="", help="numerics NAME=VALUE,... (e.g. param_dtype=bfloat16)")
    a = p.parse_args(argv)
    try:
        res = compare_models([ModelEntry.parse(s) for s in a.model], a.data, a.out, n=a.n, ks=a.k,
                             probe_questions=a.probe_questions, max_new_tokens=a.max_new_tokens,
                             max_questions=a.max_questions, temperature=a.temperature, think_prefix=a.think_prefix,
                             batch_size=a.batch_size, seed=a.seed, model_overrides=a.model_overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((Path(a.out) / "table.md").read_text())
    return 0 if res else 1


if __name__ == "__main__":
    sys.exit(main())
