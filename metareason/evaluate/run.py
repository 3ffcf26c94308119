"""`metareason eval`: n samples per question, the paper's metrics per dataset, with intervals.

    metareason eval --model runs/sft-arith-long --data lab:test lab:heldout --n 8 --k 1 4 8
    metareason eval --model path/to/hf-model --data aime24.jsonl --n 16 --k 8 --think-prefix "<think>\\n"

Datasets (`metareason.data.named`, the one resolver of `--data`): "lab:SPLIT" (the run's own lab
config; SPLIT is validation, test or heldout), "lab:SPLIT:FAM1,FAM2" (those families only: a family
the run trained on gives its SPLIT questions, any other family its held-out questions, which the run
never saw; E9), "champ" (CHAMP, offline; Hugging Face models), or a .jsonl / .parquet file of records
(question, answer; `metareason.data.manual`; for a lab model, lab questions, so that several models
can be evaluated on one fixed set).

    out/
      provenance.json what produced the samples (model, data, sampling settings); a rerun into `out`
                      reuses them only when it is equal (else refused; --overwrite moves `out` aside)
      samples.jsonl   one row per question: the decoded outputs, extracted answers, correctness, format,
                      rewards, lengths
                      (appended per batch of questions; a rerun skips the questions already there)
      results.json    per dataset: Pass@k, mG-Pass@k (means over questions, 95% t intervals),
                      accuracy, format rate, mean reward, mean length
      table.md        the same as a table
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from metareason.data.named import DatasetError, named_records
from metareason.errors import MAX_SEED, check_float, check_int, flag_name
from metareason.evaluate.passk import mg_pass_at_k, pass_at_k
from metareason.runs import LoadedModel, data_identity, fingerprint, load, model_identity, open_output
from metareason.stats import mean_interval

__all__ = ["EvalConfig", "run_eval", "eval_fingerprint", "summarise_dataset", "EvalError"]


class EvalError(ValueError):
    """Bad evaluation input (one line, names what is wrong)."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Sample every question n times and report Pass@k and mG-Pass@k per dataset."""

    model: Path
    """A `metareason train` / `metareason rl` run directory, or a Hugging Face model directory."""
    data: tuple[str, ...] = ("lab:test",)
    """Datasets: lab:SPLIT, lab:SPLIT:FAMILIES (comma-separated), champ, or .jsonl / .parquet files."""
    out: Path = Path("runs/eval")
    n: int = 8
    """Samples per question."""
    k: tuple[int, ...] = (1, 4, 8)
    """The k of Pass@k and mG-Pass@k (each <= n)."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 384
    max_questions: int = 0
    """Questions per dataset (the first ones); 0: all."""
    batch_size: int = 64
    """Rows per sampler call (questions x n are split into batches of this many)."""
    think_prefix: str = ""
    """Hugging Face models: text after the chat template's generation prompt (e.g. "<think>\\n")."""
    seed: int = 0
    overwrite: bool = False
    """Move an existing `out` of other settings (another model, data, n, temperature, ...) aside to OUT.old-N."""

    def __post_init__(self):
        if self.n < 1:
            raise EvalError(f"n must be >= 1, got {self.n}")
        if not self.k or any(k < 1 or k > self.n for k in self.k):
            raise EvalError(f"every k must be in [1, n={self.n}], got {self.k}")
        if self.batch_size < self.n:
            raise EvalError(f"batch_size={self.batch_size} must hold the n={self.n} samples of one question")
        if not self.data:
            raise EvalError("give at least one dataset (--data)")

    def validate(self, prefix: str = "--") -> None:
        """`ConfigError` naming the flag of the first setting out of range (run by `metareason eval`
        before any work; n, k and batch_size are checked on construction)."""
        check_float(flag_name(prefix, "temperature"), self.temperature, 0)
        check_float(flag_name(prefix, "top_p"), self.top_p, 0, 1, lo_open=True)
        check_int(flag_name(prefix, "top_k"), self.top_k, 0)
        check_int(flag_name(prefix, "max_new_tokens"), self.max_new_tokens, 1)
        check_int(flag_name(prefix, "max_questions"), self.max_questions, 0)
        check_int(flag_name(prefix, "seed"), self.seed, 0, MAX_SEED)


def _datasets(cfg: EvalConfig, model: LoadedModel) -> dict[str, list[dict]]:
    out = {}
    for spec in cfg.data:
        try:
            recs = named_records(spec, lab=model.lab if model.kind == "lab" else None)
        except DatasetError as e:
            raise EvalError(str(e)) from None
        if not recs:
            raise EvalError(f"dataset {spec!r} has no questions")
        out[spec] = recs[:cfg.max_questions] if cfg.max_questions else recs
    return out


def summarise_dataset(rows: Sequence[dict], ks: Sequence[int]) -> dict[str, Any]:
    """Per-dataset metrics from samples.jsonl rows: Pass@k and mG-Pass@k for each k (mean over
    questions with a 95% t interval), accuracy (the mean correct rate), format rate, reward, length."""
    n = np.asarray([len(r["correct"]) for r in rows])
    c = np.asarray([sum(r["correct"]) for r in rows])
    res: dict[str, Any] = {"questions": len(rows), "samples_per_question": int(n.min()) if len(n) else 0}
    def ci(values):  # the mean over questions with its t interval, as written to results.json
        return mean_interval(values, nan_policy="omit").as_dict()

    for k in ks:
        res[f"pass@{k}"] = ci(pass_at_k(n, c, k))
        res[f"mg-pass@{k}"] = ci(mg_pass_at_k(n, c, k))
    res["accuracy"] = ci([np.mean(r["correct"]) for r in rows])
    res["format_rate"] = ci([np.mean(r["well_formed"]) for r in rows])
    res["reward"] = ci([np.mean(r["rewards"]) for r in rows])
    res["mean_length"] = float(np.mean([np.mean(r["lengths"]) for r in rows]))
    return res


def _table(results: dict[str, dict], ks: Sequence[int]) -> str:
    cols = [f"pass@{k}" for k in ks] + [f"mg-pass@{k}" for k in ks] + ["accuracy", "format_rate", "reward"]
    head = "| dataset | questions | " + " | ".join(cols) + " | mean length |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for name, r in results.items():
        cells = [f"{100 * r[c]['mean']:.1f} [{100 * r[c]['low']:.1f}, {100 * r[c]['high']:.1f}]" if c != "reward"
                 else f"{r[c]['mean']:.3f} [{r[c]['low']:.3f}, {r[c]['high']:.3f}]" for c in cols]
        lines.append(f"| {name} | {r['questions']} | " + " | ".join(cells) + f" | {r['mean_length']:.1f} |")
    return "\n".join(lines) + "\n"


def eval_fingerprint(cfg: EvalConfig, model: LoadedModel) -> dict:
    """What an evaluation's samples depend on (`metareason.runs.fingerprint`): the model (with its
    think prefix), each dataset, and every sampling setting (`k` is left out: the metrics are
    recomputed from the samples). A folder is reused only for an equal fingerprint, so samples of
    another model, temperature, token limit or n are never mixed in (n: refused, not extended)."""
    settings = {f: getattr(cfg, f) for f in ("n", "temperature", "top_p", "top_k", "max_new_tokens",
                                              "max_questions", "batch_size", "think_prefix", "seed")}
    return fingerprint("eval", model=model_identity(model), data=[data_identity(d) for d in cfg.data],
                       settings=settings)


def run_eval(cfg: EvalConfig, *, model: LoadedModel | None = None) -> dict[str, Any]:
    """Samples, judges, writes samples.jsonl / results.json / table.md; returns the results.
    `model`: an already loaded `metareason.load` result (else `cfg.model` is loaded)."""
    from tqdm import tqdm

    from metareason.sample import SamplingConfig, generate_all

    t0 = time.perf_counter()
    model = (model or load(cfg.model)).with_think_prefix(cfg.think_prefix)
    model_cfg, params, fmt = model.config, model.params, model.format
    datasets = _datasets(cfg, model)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                              max_new_tokens=cfg.max_new_tokens, stop_tokens=fmt.stop_tokens, pad_id=fmt.pad_id)
    out = open_output(cfg.out, eval_fingerprint(cfg, model), resume=True, overwrite=cfg.overwrite,
                      created_by="eval", inputs=(model.provenance.get("path"),
                                                 *[d for d in cfg.data if not d.startswith("lab:")]))
    path = out / "samples.jsonl"
    done: dict[tuple[str, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if len(row.get("correct", ())) == cfg.n:
                done[(row["dataset"], row["id"])] = row
    path.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    per_call = cfg.batch_size // cfg.n
    root = jax.random.key(cfg.seed)
    total = sum(len(v) for v in datasets.values())
    with open(path, "a") as fh, tqdm(total=total, desc="eval", unit="question") as pbar:
        for d, (name, recs) in enumerate(datasets.items()):
            for chunk_start in range(0, len(recs), per_call):
                chunk = recs[chunk_start:chunk_start + per_call]
                pbar.update(sum((name, r["id"]) in done for r in chunk))
                todo = [r for r in chunk if (name, r["id"]) not in done]
                if not todo:
                    continue
                # the whole chunk is sampled again (same prompts, same key), so a resumed run's rows
                # equal an uninterrupted run's
                prompts = [fmt.prompt(r) for r in chunk for _ in range(cfg.n)]
                key = jax.random.fold_in(jax.random.fold_in(root, d), chunk_start)
                gens = generate_all(params, model_cfg, prompts, sampling, key=key, batch_size=cfg.batch_size)
                for i, r in enumerate(chunk):
                    if (name, r["id"]) in done:
                        continue
                    mine = gens[i * cfg.n:(i + 1) * cfg.n]
                    verdicts = [fmt.verdict(g, r) for g in mine]
                    row = {"dataset": name, "id": r["id"], "answer": r["answer"],
                           "predictions": [v.answer for v in verdicts], "correct": [v.correct for v in verdicts],
                           "well_formed": [v.well_formed for v in verdicts],
                           "rewards": [v.reward for v in verdicts], "lengths": [len(g) for g in mine],
                           "outputs": [fmt.decode(g) for g in mine]}
                    if "family" in r:
                        row["family"] = r["family"]
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    done[(name, r["id"])] = row
                pbar.update(len(todo))
    results = {name: summarise_dataset([done[(name, r["id"])] for r in recs], cfg.k)
               for name, recs in datasets.items()}
    meta = {"model": str(cfg.model), "n": cfg.n, "k": list(cfg.k), "temperature": cfg.temperature,
            "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
            "seconds": round(time.perf_counter() - t0, 1), "interval": "95% t interval over questions"}
    (out / "results.json").write_text(json.dumps({"config": meta, "datasets": results}, indent=2))
    (out / "table.md").write_text(f"# metareason eval: {cfg.model}\n\nn = {cfg.n} samples per question, "
                                  f"temperature {cfg.temperature}; percentages with 95% t intervals over "
                                  f"questions.\n\n" + _table(results, cfg.k))
    return {"config": meta, "datasets": results}
