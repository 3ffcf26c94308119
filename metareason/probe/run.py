"""`metareason probe` and `metareason demo`: configs and runs.

    metareason probe --model runs/sft-arith-long --out runs/probe            # a lab run, lab test questions
    metareason probe --model path/to/hf-model --data answers.jsonl --out runs/probe-hf
    metareason demo --out runs/demo                                          # train (or reuse), probe, report
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path


from metareason.evaluate.extract import boxed_answer
from metareason.probe.loss import METHODS, ProbeError

__all__ = ["ProbeConfig", "run_probe", "DemoConfig", "run_demo", "boxed_answer", "load_model", "hf_groups"]


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Probe a model's answer loss along trajectories and run the paper's analyses."""

    model: Path
    """A `metareason train` run directory, or a Hugging Face model directory (config.json,
    safetensors, tokenizer.json)."""
    data: str = "lab"
    """"lab" (the run's own lab config, test split), or a .jsonl / .parquet file of records
    (question, answer, trajectory and/or generations; see metareason.data)."""
    out: Path = Path("runs/probe")
    max_questions: int = 60
    """Questions probed (the first ones of the split / file)."""
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


def _norm(ans: str | None) -> str | None:
    return None if ans is None else re.sub(r"\s+", "", ans).rstrip(".")


def load_model(path: Path, mesh=None, **hf_overrides):
    """(kind "lab" | "hf", model config, params, extra) of
      - a training run (`metareason train` / `metareason rl`): kind "hf" with
        extra {"tokenizer", "run", "step"} when it has a `tokenizer/` directory (a run started from a
        Hugging Face model), else kind "lab" with extra {"run", "step"} (its SFTConfig / GRPOConfig);
      - a Hugging Face directory: kind "hf" with extra {"tokenizer"}.
    mesh: a `jax.sharding.Mesh` to import a Hugging Face directory's weights straight into (a
    run's params are restored whole; place them with `metareason.parallel.shard_params`).
    hf_overrides: numerics for a Hugging Face directory (`load_hf_checkpoint`'s overrides, e.g.
    param_dtype="float32"); a run keeps its own (apply `with_overrides`)."""
    path = Path(path)
    if (path / "checkpoints").is_dir() and (path / "config.json").exists():
        from metareason.train.sft import load_run
        cfg, model_cfg, params, step = load_run(path)
        if (path / "tokenizer").is_dir():
            from metareason.tokenize.hf import HFTokenizer
            return "hf", model_cfg, params, {"tokenizer": HFTokenizer.from_dir(path / "tokenizer"), "run": cfg,
                                             "step": step}
        return "lab", model_cfg, params, {"run": cfg, "step": step}
    if (path / "config.json").exists():
        from metareason.model import load_hf_checkpoint
        from metareason.parallel import load_hf_sharded
        from metareason.tokenize.hf import HFTokenizer
        model_cfg, params = (load_hf_checkpoint(path, **hf_overrides) if mesh is None
                             else load_hf_sharded(path, mesh, **hf_overrides))
        return "hf", model_cfg, params, {"tokenizer": HFTokenizer.from_dir(path)}
    raise FileNotFoundError(f"{path} is neither a training run (config.json + checkpoints/) nor a Hugging Face "
                            "model directory (config.json)")


def hf_groups(records: list[dict]) -> dict[str, list[dict]]:
    """Reference trajectories count as correct; generations are split by their boxed answer."""
    groups: dict[str, list[dict]] = {"correct (reference)": [], "correct (generations)": [],
                                     "incorrect (generations)": []}
    for r in records:
        if r.get("trajectory"):
            groups["correct (reference)"].append(dict(r, generations=[r["trajectory"]], correct=True))
        for j, g in enumerate(r.get("generations") or []):
            ok = _norm(boxed_answer(g)) == _norm(r["answer"])
            # probe the thinking only: cut at the end-of-thinking delimiter if there is one
            text = g.split("</think>")[0]
            groups["correct (generations)" if ok else "incorrect (generations)"].append(
                dict(r, id=f"{r['id']}-g{j}", generations=[text], correct=ok))
    return groups


def run_probe(cfg: ProbeConfig, *, model=None) -> dict:
    """Runs the probe and the analyses; writes out/curves.jsonl, out/*.png, out/results.json and
    out/summary.md. `model`: an already loaded `load_model` result (the demo passes its own).
    With `cfg.mesh` the model is imported into the mesh's shards and probed there."""
    from metareason.model.params import with_overrides
    from metareason.parallel import Placement

    place = Placement.from_text(cfg.mesh)
    if model is None:
        kind, model_cfg, params, extra = load_model(cfg.model, mesh=place.mesh)
        model_cfg, params = with_overrides(model_cfg, params, cfg.model_overrides)
        model = kind, model_cfg, place.params(params, model_cfg), extra
    with place.context():
        return _run_probe(cfg, model)


def _run_probe(cfg: ProbeConfig, model) -> dict:
    from metareason.probe.inputs import HFCodec, LabCodec, examples_from_records
    from metareason.probe.report import analyse, lab_extras, lab_trajectories, write_summary

    if cfg.method not in METHODS:
        raise ProbeError(f"unknown probe method {cfg.method!r} (known: {', '.join(METHODS)})")
    if cfg.max_questions < 1 or cfg.every < 1:
        raise ProbeError("max_questions and every must be >= 1")
    t0 = time.perf_counter()
    kind, model_cfg, params, extra = model
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "lab":
        codec = LabCodec()
        if cfg.data != "lab":
            raise ProbeError("a lab model probes lab data only (--data lab)")
        from metareason.tasks.lab import lab_records
        records = list(lab_records(extra["run"].lab, "test", also_styles=("incorrect", "summary")))
        records = records[:cfg.max_questions]
        groups = lab_trajectories(params, model_cfg, records, samples=cfg.samples, seed=cfg.seed)
        source = f"lab run {cfg.model} (step {extra['step']}), {len(records)} test questions"
    else:
        codec = HFCodec(extra["tokenizer"], think_prefix=cfg.think_prefix)
        if cfg.data == "lab":
            raise ProbeError("a Hugging Face model needs --data FILE (.jsonl or .parquet records)")
        from metareason.data.manual import read_records
        records = read_records(cfg.data).records[:cfg.max_questions]
        groups = hf_groups(records)
        source = f"Hugging Face model {cfg.model}, {len(records)} questions from {cfg.data}"
    examples = {name: examples_from_records(codec, recs) for name, recs in groups.items()}
    first = next((n for n in groups if n.startswith("correct") and groups[n]), None)
    delim = examples_from_records(codec, groups[first], delimiter=True) if first else None
    res = analyse(params, model_cfg, examples, out, delimiter_examples=delim, every=cfg.every,
                  alpha=cfg.ema_alpha, method=cfg.method)
    if kind == "lab" and cfg.landscape_grid:
        mean_curve = res.get("mean_correct_curve")
        extras = lab_extras(params, model_cfg, records, out, mean_curve=mean_curve, grid=cfg.landscape_grid,
                            budgets=cfg.budgets, seed=cfg.seed)
        figs = res.pop("figures")
        res.update({k: v for k, v in extras.items() if k != "figures"})
        res["figures"] = {**figs, **extras["figures"]}
    res["source"], res["seconds"] = source, round(time.perf_counter() - t0, 1)
    write_summary(res, out, title="metareason probe", preamble=f"{source}; every {cfg.every} token(s), "
                  f"method {cfg.method}, EMA alpha {cfg.ema_alpha}; {res['seconds']} s.")
    return res


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Train (or reuse) a lab model, probe it, and write a report mirroring the paper's figures."""

    out: Path = Path("runs/demo")
    steps: int = 2600
    """SFT steps of the demo model (about 10 minutes on 2 CPU cores)."""
    reuse: bool = True
    """Reuse a finished model in out/model (resume an unfinished one)."""
    model: str = "lab-fast"
    """Model preset (metareason.train.presets)."""
    eval_questions: int = 50
    """Held-out questions of the model's greedy accuracy (validation and test)."""
    max_questions: int = 60
    samples: int = 2
    landscape_grid: int = 11
    budgets: tuple[int, ...] = (0, 8, 16, 32, 64, 96, 128, 192)
    seed: int = 0


def run_demo(cfg: DemoConfig) -> Path:
    """The README's main job: out/model (the SFT run), out/probe (curves, figures, results) and
    out/report.md. Returns the report's path."""
    from metareason.train.presets import train_presets
    from metareason.train.sft import train_sft
    from metareason.train.state import OptimizerConfig

    out = Path(cfg.out)
    model_dir = out / "model"
    # the demo model BENCHMARKS.md reports: the arith-long model on its first 4,000 questions, 8 x 256
    # tokens per step, 2600 steps, cosine to 10%
    preset = train_presets()["arith-long"]
    train_cfg = dataclasses.replace(preset, out=model_dir, steps=cfg.steps, seed=cfg.seed, batch_size=8, seq_len=256,
                                    lab=dataclasses.replace(preset.lab, train_size=4000),
                                    optimizer=OptimizerConfig(lr=3e-3),
                                    model=cfg.model, eval_questions=cfg.eval_questions)
    summary_file = model_dir / "summary.json"
    if cfg.reuse and summary_file.exists():
        print(f"reusing the trained model in {model_dir}", flush=True)
    else:
        resume = cfg.reuse and (model_dir / "config.json").exists()
        train_sft(dataclasses.replace(train_cfg, resume=resume))
    summary = json.loads(summary_file.read_text())
    probe_cfg = ProbeConfig(model=model_dir, out=out / "probe", max_questions=cfg.max_questions,
                            samples=cfg.samples, landscape_grid=cfg.landscape_grid, budgets=cfg.budgets,
                            seed=cfg.seed)
    run_probe(probe_cfg)
    acc = summary.get("test", {}).get("accuracy")
    lines = [
        "# metareason demo: the inner loop measured on the synthetic lab",
        "",
        f"Model: {summary['model']} ({summary['params']:,} parameters), SFT on long arithmetic trajectories for "
        f"{summary['steps']} steps; greedy test accuracy {acc:.2f}." if acc is not None else "",
        "Curves, numbers and figures: `probe/` (results.json, curves.jsonl). Means of relative changes (E5) "
        "are dominated by tokens after which L-hat is already near 0; the medians are the robust comparison.",
        "",
        (out / "probe" / "summary.md").read_text().split("\n", 2)[2].replace("](", "](probe/"),
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"report: {report}", flush=True)
    return report
