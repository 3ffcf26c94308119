"""`metareason probe`: its config and run (the demo, which trains then probes, is `metareason.demo`).

    metareason probe --model runs/sft-arith-long --out runs/probe            # a lab run, lab test questions
    metareason probe --model path/to/hf-model --data answers.jsonl --out runs/probe-hf
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from metareason.data.named import DatasetError, is_lab_spec, named_records
from metareason.errors import MAX_SEED, ConfigError, check_float, check_int, flag_name
from metareason.model import ModelConfig
from metareason.parallel import Placement
from metareason.format import END_THINK, boxed_answer, math_verdict
from metareason.probe.inputs import examples_from_records, fits
from metareason.probe.loss import METHODS, ProbeError
from metareason.probe.report import analyse, lab_extras, lab_trajectories, write_summary
from metareason.runs import LoadedModel, data_identity, fingerprint, load, model_identity, open_output
from metareason.tasks.lab import lab_records

__all__ = ["ProbeConfig", "run_probe", "probe_fingerprint", "boxed_answer", "hf_groups"]

MOVED = {"load_model": "metareason.load (it returns a LoadedModel)", "run_demo": "metareason.demo.run_demo",
         "DemoConfig": "metareason.demo.DemoConfig"}


def __getattr__(name):
    if name in MOVED:
        raise AttributeError(f"metareason.probe.run.{name} moved to {MOVED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Probe a model's answer loss along trajectories and run the paper's analyses."""

    model: Path
    """A `metareason train` run directory, or a Hugging Face model directory (config.json,
    safetensors, tokenizer.json)."""
    data: str = "lab"
    """A named dataset (`metareason.data.named`): "lab" (= "lab:test", the run's own lab config),
    "lab:SPLIT" or "lab:SPLIT:FAM1,FAM2" (lab models), "champ" (CHAMP, offline; Hugging Face models),
    or a .jsonl / .parquet file of records (question, answer, trajectory and/or generations)."""
    out: Path = Path("runs/probe")
    max_questions: int = 60
    """Questions probed (the first ones of the split / file)."""
    max_tokens: int = 0
    """Longest example probed (prompt + trajectory + probe, in tokens); longer ones are skipped and
    counted in the report. 0: the model's context (max_position_embeddings)."""
    every: int = 1
    """Probe after every `every` trajectory tokens (1 is needed for the token-type statistics, E5)."""
    method: str = "cache"
    """"cache" or "packed" (both exact)."""
    samples: int = 2
    """Lab models: the model's own trajectories sampled per question (split into correct / incorrect)."""
    ema_alpha: float = 0.1
    """EMA smoothing of the curves before averaging (the paper: 0.01 over thousands of tokens)."""
    landscape_grid: int = 11
    """Lab models: E1 grid points per axis (0 skips E1 and E12)."""
    budgets: tuple[int, ...] = (0, 8, 16, 32, 64, 96, 128, 192)
    """Lab models: thinking-token budgets of the budget-forcing comparison (E12)."""
    think_prefix: str = ""
    """Hugging Face models: text after the chat template's generation prompt (e.g. "<think>\\n")."""
    seed: int = 0
    mesh: str = ""
    """Device mesh DATAxFSDPxTENSOR (metareason.parallel.MeshConfig.parse; "" one device), e.g.
    1x1x4 to split a 32B model's heads and MLP over 4 chips."""
    model_overrides: str = ""
    """Numerics of the model, NAME=VALUE,... (ModelConfig.NUMERICS), e.g. compute_dtype=bfloat16."""
    overwrite: bool = False
    """Move an existing `out` of other settings (another model, data, ...) aside to OUT.old-N."""

    def validate(self, prefix: str = "--") -> None:
        """`ConfigError` naming the flag of the first setting out of range (run by `metareason probe`
        before any work)."""
        validate_probe_settings(self, prefix)
        check_int(flag_name(prefix, "every"), self.every, 1)
        check_int(flag_name(prefix, "max_tokens"), self.max_tokens, 0)
        if self.method not in METHODS:
            raise ConfigError(f"{flag_name(prefix, 'method')} must be one of {', '.join(METHODS)}, got {self.method!r}")


def probe_fingerprint(cfg: ProbeConfig, model: LoadedModel) -> dict:
    """What a probe's outputs depend on (`metareason.runs.fingerprint`): the model (its config
    carries the numerics overrides), the data and every setting but `out`, `mesh`, `overwrite`."""
    skip = ("model", "data", "out", "mesh", "overwrite")
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    return fingerprint("probe", model=model_identity(model), data=data_identity(cfg.data), settings=settings)


def validate_probe_settings(cfg, prefix: str = "--") -> None:
    """The range checks of the probe's settings (`max_questions`, `samples`, `landscape_grid`,
    `budgets`, `seed`; also `ema_alpha` where `cfg` has it), shared by `ProbeConfig` and `DemoConfig`."""
    check_int(flag_name(prefix, "max_questions"), cfg.max_questions, 1)
    check_int(flag_name(prefix, "samples"), cfg.samples, 0)
    check_int(flag_name(prefix, "landscape_grid"), cfg.landscape_grid, 0)
    if cfg.landscape_grid == 1:
        raise ConfigError(f"{flag_name(prefix, 'landscape_grid')} must be 0 (no landscape) or >= 2, got 1")
    if not cfg.budgets:
        raise ConfigError(f"{flag_name(prefix, 'budgets')} needs at least one budget")
    for b in cfg.budgets:
        check_int(flag_name(prefix, "budgets"), b, 0)
    check_int(flag_name(prefix, "seed"), cfg.seed, 0, MAX_SEED)
    if hasattr(cfg, "ema_alpha"):
        check_float(flag_name(prefix, "ema_alpha"), cfg.ema_alpha, 0, 1)


def hf_groups(records: list[dict], fmt=None) -> dict[str, list[dict]]:
    """Reference trajectories count as correct; generations are split by the format's verdict
    (`fmt.verdict(text, record).correct`; without `fmt`, `math_verdict`, which `HFFormat.verdict`
    calls: Math-Verify on the last \\boxed{} after the end of thinking, so \\frac{1}{2} is 0.5).
    A generation is probed up to its end-of-thinking delimiter; its index in the record's
    generations travels as "generation" (the curves' `generation`)."""
    delimiter = fmt.delimiter if fmt is not None else END_THINK
    judge = fmt.verdict if fmt is not None else (lambda text, r: math_verdict(text, r["answer"], delimiter=delimiter))
    groups: dict[str, list[dict]] = {"correct (reference)": [], "correct (generations)": [],
                                     "incorrect (generations)": []}
    for r in records:
        if r.get("trajectory"):
            groups["correct (reference)"].append(dict(r, generations=[r["trajectory"]], correct=True))
        for j, g in enumerate(r.get("generations") or []):
            ok = judge(g, r).correct
            text = g.split(delimiter)[0]  # probe the thinking only
            groups["correct (generations)" if ok else "incorrect (generations)"].append(
                dict(r, id=f"{r['id']}-g{j}", generations=[text], generation=j, correct=ok))
    if records and not any(groups.values()):
        raise ProbeError(f"none of the {len(records)} records has a trajectory or generations to probe")
    return groups


def _fitting_examples(fmt, groups: dict[str, list[dict]], max_tokens: int):
    """The probe examples of each group that fit in `max_tokens` (`metareason.probe.inputs.fits`),
    the delimiter examples of the first correct group (the same ones), and the skipped count:
    (examples by group, delimiter examples or None, {"count", "max_tokens", "reason", "by_group"})."""
    examples = {name: examples_from_records(fmt, recs) for name, recs in groups.items()}
    first = next((n for n in groups if n.startswith("correct") and groups[n]), None)
    delim = examples_from_records(fmt, groups[first], delimiter=True) if first else None
    by_group = {}
    for name, exs in examples.items():
        keep = fits(exs, max_tokens)
        if name == first:
            keep &= fits(delim, max_tokens)
            delim = [e for e, k in zip(delim, keep) if k]
        examples[name] = [e for e, k in zip(exs, keep) if k]
        by_group[name] = int((~keep).sum())
    count = sum(by_group.values())
    if count and not any(examples.values()):
        raise ProbeError(f"all {count} examples are longer than --max-tokens {max_tokens} "
                         "(prompt + trajectory + probe); raise --max-tokens up to the model's context")
    skipped = {"count": count, "max_tokens": max_tokens, "by_group": by_group,
               "reason": f"prompt + trajectory + probe longer than {max_tokens} tokens (--max-tokens)"}
    return examples, delim or None, skipped


def run_probe(cfg: ProbeConfig, *, model: LoadedModel | None = None) -> dict:
    """Runs the probe and the analyses; writes out/curves.jsonl, out/*.png, out/results.json and
    out/summary.md. `model`: an already loaded `metareason.load` result (else `cfg.model` is loaded,
    with `cfg.model_overrides`). With `cfg.mesh` the model is imported into the mesh's shards and
    probed there."""
    place = Placement.from_text(cfg.mesh)
    if model is None:
        model = load(cfg.model, mesh=place.mesh, **ModelConfig.parse_overrides(cfg.model_overrides))
        model = dataclasses.replace(model, params=place.params(model.params, model.config))
    with place.context():
        return _run_probe(cfg, model)


def _run_probe(cfg: ProbeConfig, model: LoadedModel) -> dict:
    if cfg.method not in METHODS:
        raise ProbeError(f"unknown probe method {cfg.method!r} (known: {', '.join(METHODS)})")
    if cfg.max_questions < 1 or cfg.every < 1:
        raise ProbeError("max_questions and every must be >= 1")
    t0 = time.perf_counter()
    model_cfg, params = model.config, model.params
    if model.kind != "lab":
        model = model.with_think_prefix(cfg.think_prefix)
    out = open_output(cfg.out, probe_fingerprint(cfg, model), resume=True, overwrite=cfg.overwrite,
                      created_by="probe",
                      inputs=(model.provenance.get("path"),
                              None if is_lab_spec(cfg.data) or cfg.data == "champ" else cfg.data))
    fmt = model.format
    lab = model.lab if model.kind == "lab" else None
    try:
        records = named_records(cfg.data, lab=lab, also_styles=("incorrect", "summary") if lab else ())
    except DatasetError as e:
        raise ProbeError(str(e)) from None
    records = records[:cfg.max_questions]
    if model.kind == "lab":
        groups = lab_trajectories(params, model_cfg, records, samples=cfg.samples, seed=cfg.seed)
        source = f"lab run {cfg.model} (step {model.step}), {len(records)} questions from {cfg.data}"
    else:
        groups = hf_groups(records, fmt)
        source = f"Hugging Face model {cfg.model}, {len(records)} questions from {cfg.data}"
    max_tokens = cfg.max_tokens or model_cfg.max_position_embeddings
    examples, delim, skipped = _fitting_examples(fmt, groups, max_tokens)
    res = analyse(params, model_cfg, examples, out, delimiter_examples=delim, every=cfg.every,
                  alpha=cfg.ema_alpha, method=cfg.method)
    if model.kind == "lab" and cfg.landscape_grid:
        mean_curve = res.get("mean_correct_curve")
        extras = lab_extras(params, model_cfg, records, out, mean_curve=mean_curve, grid=cfg.landscape_grid,
                            budgets=cfg.budgets, seed=cfg.seed)
        figs = res.pop("figures")
        res.update({k: v for k, v in extras.items() if k != "figures"})
        res["figures"] = {**figs, **extras["figures"]}
    res["source"], res["seconds"] = source, round(time.perf_counter() - t0, 1)
    res["skipped"] = skipped
    note = (f" Skipped {skipped['count']} example(s): {skipped['reason']}." if skipped["count"] else "")
    write_summary(res, out, title="metareason probe", preamble=f"{source}; every {cfg.every} token(s), "
                  f"method {cfg.method}, EMA alpha {cfg.ema_alpha}; {res['seconds']} s.{note}")
    return res
