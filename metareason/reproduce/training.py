"""The training-paradigm experiments of `metareason reproduce`: E6, E7, E9, E10, E11 as data.

Every arm at every seed of `budget.seeds` is one `Unit`: SFT (`train_sft`, resumed in the unit's
folder), GRPO (`train_grpo`), or an evaluation (`run_eval`, n = budget.samples answers per question
at temperature 1, ks = budget.ks). Shared arms share keys ("train/base/seed-S", "train/sft-long/seed-S"
serve E6, E7 and E11), so they run once. Every interval is `metareason.stats.bootstrap_interval` over
float[seeds, questions] (resample seeds, then questions); a paired difference is the per-seed
per-question difference, bootstrapped the same way. The lab's questions are the same at every seed
(data seed 0); the training seed varies.

    E6  base (no-thinking answers + BASE_MIX long trajectories: a small trajectory prior, so zero-RL
        can explore), from it: sft-short, sft-long (equal EPOCHS over the same questions: steps are
        computed from the questions' token counts and the packing, `epoch_steps`), zero-RL GRPO (on
        the same questions; `grpo_passes` of them, in the note). Equal tokens in E6's extra.
    E7  (sft-long -> GRPO) minus zero-RL GRPO, paired on the test questions; and minus sft-long.
        GRPO's learning rate: a small sweep (GRPO_LRS) scored on VALIDATION questions, `choose_lr`.
    E9  base-all (every family) and SFT-long on TRAINED_FAMILIES from it, per family (within/across).
    E10 k distinct trajectories per question, k in E10_KS, at equal training frequency (slots).
    E11 GRPO from sft-long with update_n in E11_NS of a group of 16; stability = across-seed variance.

Time of the "lab" budget on 2 CPU cores, measured in the second lab run (2026-12-03; BENCHMARKS.md
has the whole table). Step counts per seed: base 384, sft-short 639, sft-long 2330 SFT steps
(8 x 256 tokens), grpo-zero and sft-long-grpo 20 GRPO steps, the lr sweep 3 x 8 (first seed only),
grpo-n1/n16 12; base-all 67, sft-long-fams 162, k1/k4/k16 121 (E9/E10, first run's settings).
Unit times with the 2 cores to itself / shared with the probe experiments' run: sft-long 508 s /
715 s, base 157 s / 188 s, sft-short 174 s / 297 s, a 20-step GRPO arm of a trained model (rollouts
stop at about 130 tokens) 102-106 s / 195-206 s, one evaluation of 32 questions x 32 samples 7-24 s.
E6+E7+E11 at 3 seeds: about 70 min alone (the sum of those unit times; the run shared the cores).
The paper's scale (an epoch of tens of thousands of questions, GRPO for hundreds of steps over the
whole training set) does not fit 2 cores: GRPO here sees 1.6% of the training questions once, and
E6/E7's notes say so.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metareason.evaluate.passk import mg_pass_at_k, pass_at_k
from metareason.evaluate.run import EvalConfig, run_eval
from metareason.format import LabFormat
from metareason.probe.figures import pyplot, save_figure
from metareason.reproduce.base import Budget, Claim, ClaimResult, Experiment, Unit, verdict
from metareason.stats import Interval, bootstrap_interval
from metareason.tasks.lab import LabConfig, lab_records
from metareason.train.grpo import GRPOLossConfig
from metareason.train.rl import GRPOConfig, train_grpo
from metareason.train.sft import SFTConfig, train_sft
from metareason.train.state import OptimizerConfig

__all__ = ["BASE_MIX", "GRPO_LRS", "E10_KS", "E11_NS", "TRAINED_FAMILIES", "lab_config", "epoch_steps",
           "tokens_per_epoch", "grpo_passes", "across_seed_variance", "arm_configs", "choose_lr", "per_question",
           "pooled", "paired_interval",
           "E6", "E7", "E9", "E10", "E11", "EXPERIMENTS"]

BASE_MIX = (("long", "", 0.03),)
"""The base model's trajectory prior: 3% of its (otherwise no-thinking) training questions come with
long trajectories, so zero-RL GRPO has something to explore from."""

TRAIN_QUESTIONS = 10000
"""Training questions of E6/E7/E11 at the lab budget (times budget.scale at smaller budgets): 3
epochs of long trajectories are then 2330 SFT steps. The first lab run used 1000 (233 steps): every
arm stayed near chance (validation Pass@1 0.8-2.1% after SFT-long and the GRPO sweep), so no
comparison could come out either way. The arith-long preset needs about 2000-2500 steps of 7 x 288
tokens to pass 50-90% greedy accuracy (BENCHMARKS.md); 10000 questions reach that at equal epochs.
Chosen before any E6/E7/E11 claim was measured. E9 and E10 keep their smaller sets
(E9_QUESTIONS, E10_QUESTIONS): their models are near chance, and their notes say so."""
SFT_EPOCHS = 3
"""Passes over the training questions of every SFT arm (equal epochs, E6)."""
GRPO_STEPS = 20
"""GRPO steps of the E6/E7 arms at the lab budget (8 questions a step, drawn from the same training
questions: 160 of the 10000, 1.6% of a pass; `grpo_passes`). One full pass is 1250 steps, about
5-10 s each on 2 CPU cores: it does not fit the lab budget, and the notes say so."""
GRPO_LRS = (3e-5, 1e-4, 3e-4)
GRPO_SWEEP_STEPS = 8
E10_KS = (1, 4, 16)
E10_QUESTIONS = 100
E9_QUESTIONS = 400
"""Training questions per family of E9 (the lab's train_size is per family)."""
E11_NS = (1, 16)
"""update_n of E11's arms. (1, 4, 16) before the second lab run; cut to its two ends by the rule this
module's docstring fixed before the first run (commit f4d3b79: "if the lab run exceeds 90 min, cut
E11 to update_n (1, 16) before anything else"): the claims compare only these two."""
E11_STEPS = 12
TRAINED_FAMILIES = ("arith", "addition")
ALL_FAMILIES = ("arith", "addition", "linear", "pointer")
BATCH, SEQ_LEN, FILL = 8, 256, 0.9
"""SFT packed rows per step, tokens per row, and the packer's assumed fill (equal-epoch step counts)."""
QUESTIONS_PER_STEP, GROUP = 8, 8
MAX_NEW_TOKENS = 320


def lab_config(budget: Budget, style: str, *, families: Sequence[str] = ("arith",), questions: int = TRAIN_QUESTIONS,
               mix: tuple = (), **kw) -> LabConfig:
    """The lab data of one arm: the same questions at every seed (data seed 0) AND in every arm.

    The lab draws a question's trajectory from the stream its questions come from, so two styles
    would give two sets of training questions; every arm therefore draws its questions from the
    "none" stream and gets its own style through `mix` (a mixed question is rendered from its own
    per-question stream): `style` alone is mix ((style, "", 1.0),); with `mix` given, the rest of
    the questions keep `style`. train_size scaled by budget.scale (at least 16); eval_size covers
    budget.questions test and validation questions."""
    if not mix and style != "none":
        mix = ((style, "", 1.0),)
    elif mix and style != "none":
        raise ValueError(f"an arm with a mix draws its questions from the 'none' stream; got style {style!r}")
    return LabConfig(families=tuple(families), style="none", difficulty=(1, 2),
                     train_size=max(16, int(round(questions * budget.scale))),
                     eval_size=max(budget.questions, 16), seed=0, mix=tuple(mix), **kw)


def tokens_per_epoch(lab: LabConfig, slots: int = 1) -> int:
    """Tokens of one pass over the lab's training questions (each question `slots` times; with k
    trajectories per question the first one's length stands for each)."""
    return slots * _epoch_tokens(lab)


@functools.lru_cache(maxsize=64)
def _epoch_tokens(lab: LabConfig) -> int:
    fmt = LabFormat()
    total = 0
    for r in lab_records(lab, "train"):
        total += len(fmt.sft_example(r)["tokens"])
    return total


def epoch_steps(lab: LabConfig, epochs: float, *, slots: int = 1, batch_size: int = BATCH, seq_len: int = SEQ_LEN,
                fill: float = FILL) -> int:
    """SFT steps for `epochs` passes over the training questions: ceil(epochs x tokens / (batch_size x
    seq_len x fill)); at least 2."""
    return max(2, math.ceil(epochs * tokens_per_epoch(lab, slots) / (batch_size * seq_len * fill)))


def _sft(budget: Budget, seed: int, lab: LabConfig, epochs: float, init: str = "", **kw):
    steps = epoch_steps(lab, epochs, slots=kw.get("slots_per_question", 1))
    return SFTConfig(out=Path("run"), model="lab-fast", init=init, steps=steps, batch_size=BATCH, seq_len=SEQ_LEN,
                     optimizer=OptimizerConfig(lr=3e-3), eval_every=0, checkpoint_every=200, final_eval=False,
                     seed=seed, lab=lab, **kw)


def _grpo(budget: Budget, seed: int, lab: LabConfig, steps: int, lr: float, *, update_n: int = 0,
          group: int = GROUP, per_step: int = QUESTIONS_PER_STEP):
    if budget.scale < 0.5:  # smoke: the whole path in minutes (numbers meaningless): small groups, short rollouts
        group, per_step, update_n = min(group, 4), min(per_step, 2), min(update_n, 4)
    return GRPOConfig(out=Path("run"), init="", lab=lab, steps=steps, questions_per_step=min(per_step, lab.train_size),
                      group_size=group, update_n=update_n, max_new_tokens=_max_new(budget, 256), epochs_per_batch=2,
                      minibatches=2,
                      loss=GRPOLossConfig(kl_coef=0.001, entropy_coef=0.0),
                      optimizer=OptimizerConfig(lr=lr, warmup_steps=3, final_lr_fraction=1.0, weight_decay=0.0),
                      checkpoint_every=20, final_eval=False, seed=seed)


def _max_new(budget: Budget, tokens: int) -> int:
    """Generated-token cap: `tokens` at lab and full, 64 at smoke (a smoke run's numbers mean nothing)."""
    return tokens if budget.scale >= 0.5 else 64


def grpo_passes(cfg) -> float:
    """Passes a GRPO config makes over its training questions: steps x questions_per_step /
    (train_size x families) (1.0: each question once, the paper's one epoch)."""
    return cfg.steps * cfg.questions_per_step / (cfg.lab.train_size * len(cfg.lab.families))


def arm_configs(budget: Budget, seed: int) -> dict:
    """Every training arm's config at `budget` and `seed` (GRPO arms with lr=None: chosen on
    validation at run time), keyed by arm name. Built without running anything (tests read it)."""
    arith = dict(families=("arith",))
    cfg = {
        "base": _sft(budget, seed, lab_config(budget, "none", mix=BASE_MIX, **arith), SFT_EPOCHS),
        "sft-short": _sft(budget, seed, lab_config(budget, "short", **arith), SFT_EPOCHS),
        "sft-long": _sft(budget, seed, lab_config(budget, "long", **arith), SFT_EPOCHS),
    }
    rl_lab = lab_config(budget, "long", **arith)
    steps = budget.steps(GRPO_STEPS)
    cfg["grpo-zero"] = _grpo(budget, seed, rl_lab, steps, lr=0.0)
    cfg["sft-long-grpo"] = _grpo(budget, seed, rl_lab, steps, lr=0.0)
    cfg["base-all"] = _sft(budget, seed, lab_config(budget, "none", families=ALL_FAMILIES, mix=BASE_MIX,
                                                    questions=E9_QUESTIONS), SFT_EPOCHS)
    cfg["sft-long-fams"] = _sft(budget, seed, lab_config(budget, "long", families=TRAINED_FAMILIES,
                                                         questions=E9_QUESTIONS), SFT_EPOCHS)
    slots = max(E10_KS)
    k_lab = lab_config(budget, "long", questions=E10_QUESTIONS, trajectories_per_question=slots, **arith)
    for k in E10_KS:
        cfg[f"k{k}"] = _sft(budget, seed, k_lab, 1, k_trajectories=k, slots_per_question=slots)
    for n in E11_NS:
        cfg[f"grpo-n{n}"] = _grpo(budget, seed, rl_lab, budget.steps(E11_STEPS), lr=0.0, update_n=n, group=16,
                                  per_step=4)
    for lr in GRPO_LRS:
        cfg[f"grpo-lr{lr:g}"] = _grpo(budget, seed, rl_lab, budget.steps(GRPO_SWEEP_STEPS), lr=lr)
    return cfg


def choose_lr(validation: Mapping[float, float]) -> float:
    """The GRPO learning rate: the one of highest mean VALIDATION Pass@1 (lr -> value); ties go to
    the smaller lr. Takes validation results only (the test split never reaches it)."""
    if not validation:
        raise ValueError("choose_lr needs at least one validation result")
    return max(sorted(validation), key=lambda lr: (validation[lr], -lr))


# ----- units -------------------------------------------------------------------------------------

def _settings(cfg) -> dict:
    return {k: v for k, v in cfg.to_json().items() if k not in ("out", "resume", "overwrite", "init")}


def _train_unit(key: str, cfg, init_key: str = "", lr_from: tuple[str, ...] = ()) -> Unit:
    """One training arm: SFT or GRPO in WORK/key/run (resumed), started from `init_key`'s run; GRPO
    arms with `lr_from` (the sweep's validation evaluations) take the lr `choose_lr` picks."""
    needs = ((init_key,) if init_key else ()) + lr_from

    def run(folder: Path, inputs: Mapping[str, dict]) -> dict:
        c = dataclasses.replace(cfg, out=folder / "run", resume=True,
                                init=inputs[init_key]["run"] if init_key else cfg.init)
        extra = {}
        if lr_from:
            lr = choose_lr({inputs[k]["lr"]: float(np.mean(inputs[k]["pass@1"])) for k in lr_from})
            c = dataclasses.replace(c, optimizer=dataclasses.replace(c.optimizer, lr=lr))
            extra["lr"] = lr
        (train_sft if isinstance(c, SFTConfig) else train_grpo)(c)
        return {"run": str(folder / "run"), **extra}

    settings = _settings(cfg) | {"init": init_key, "lr_chosen_on_validation_from": list(lr_from)}
    return Unit(key=key, settings=settings, run=run, needs=needs)


def per_question(rows: Sequence[dict], ks: Sequence[int]) -> dict:
    """Per-question Pass@k and mG-Pass@k (float lists, one per question) of samples.jsonl rows."""
    n = np.asarray([len(r["correct"]) for r in rows])
    c = np.asarray([sum(r["correct"]) for r in rows])
    out = {"ids": [str(r.get("id", i)) for i, r in enumerate(rows)], "families": [r.get("family", "") for r in rows],
           "mean_length": [float(np.mean(r["lengths"])) if "lengths" in r else math.nan for r in rows]}
    for k in ks:
        out[f"pass@{k}"] = pass_at_k(n, c, k).tolist()
        out[f"mg-pass@{k}"] = mg_pass_at_k(n, c, k).tolist()
    return out


def _eval_unit(budget: Budget, key: str, model_key: str, lab: LabConfig, split: str, families: Sequence[str],
               lr: float = 0.0) -> Unit:
    settings = {"model": model_key, "split": split, "families": list(families), "n": budget.samples,
                "ks": list(budget.ks), "questions": budget.questions, "lab": dataclasses.asdict(lab),
                "max_new_tokens": _max_new(budget, MAX_NEW_TOKENS)}

    def run(folder: Path, inputs: Mapping[str, dict]) -> dict:
        rows = []
        by = {}
        for r in lab_records(lab, split):
            if r["family"] in families and by.get(r["family"], 0) < budget.questions:
                by[r["family"]] = by.get(r["family"], 0) + 1
                rows.append({k: r[k] for k in ("id", "question", "answer", "family")})
        folder.mkdir(parents=True, exist_ok=True)
        q = folder / "questions.jsonl"
        q.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = folder / "eval"
        run_eval(EvalConfig(model=Path(inputs[model_key]["run"]), data=(str(q),), out=out, n=budget.samples,
                            k=tuple(budget.ks), max_new_tokens=_max_new(budget, MAX_NEW_TOKENS),
                            batch_size=max(64, budget.samples),
                            seed=0, overwrite=True))
        samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        return per_question(samples, budget.ks) | {"lr": lr}

    return Unit(key=key, settings=settings, run=run, needs=(model_key,))


def _e6_units(budget: Budget) -> list[Unit]:
    units = []
    for s in budget.seeds:
        c = arm_configs(budget, s)
        base, long_ = f"train/base/seed-{s}", f"train/sft-long/seed-{s}"
        sweep = []
        if s == budget.seeds[0]:  # the lr sweep: from sft-long, scored on validation, at the first seed
            for lr in GRPO_LRS:
                tk = f"train/grpo-lr{lr:g}/seed-{s}"
                units.append(_train_unit(tk, c[f"grpo-lr{lr:g}"], long_))
                units.append(_eval_unit(budget, f"eval-val/grpo-lr{lr:g}/seed-{s}", tk, c["sft-long"].lab,
                                        "validation", ("arith",), lr=lr))
        sweep = tuple(f"eval-val/grpo-lr{lr:g}/seed-{budget.seeds[0]}" for lr in GRPO_LRS)
        units += [_train_unit(base, c["base"]),
                  _train_unit(f"train/sft-short/seed-{s}", c["sft-short"], base),
                  _train_unit(long_, c["sft-long"], base),
                  _train_unit(f"train/grpo-zero/seed-{s}", c["grpo-zero"], base, sweep),
                  _train_unit(f"train/sft-long-grpo/seed-{s}", c["sft-long-grpo"], long_, sweep)]
        for arm in ("base", "sft-short", "sft-long", "grpo-zero", "sft-long-grpo"):
            units.append(_eval_unit(budget, f"eval/{arm}/seed-{s}", f"train/{arm}/seed-{s}", c["sft-long"].lab,
                                    "test", ("arith",)))
    return units


def _e9_units(budget: Budget) -> list[Unit]:
    units = []
    for s in budget.seeds:
        c = arm_configs(budget, s)
        units += [_train_unit(f"train/base-all/seed-{s}", c["base-all"]),
                  _train_unit(f"train/sft-long-fams/seed-{s}", c["sft-long-fams"], f"train/base-all/seed-{s}")]
        for arm in ("base-all", "sft-long-fams"):
            units.append(_eval_unit(budget, f"eval/{arm}/seed-{s}", f"train/{arm}/seed-{s}", c["base-all"].lab,
                                    "test", ALL_FAMILIES))
    return units


def _e10_units(budget: Budget) -> list[Unit]:
    units = []
    for s in budget.seeds:
        c = arm_configs(budget, s)
        for k in E10_KS:
            units += [_train_unit(f"train/k{k}/seed-{s}", c[f"k{k}"]),
                      _eval_unit(budget, f"eval/k{k}/seed-{s}", f"train/k{k}/seed-{s}", c["sft-long"].lab, "test",
                                 ("arith",))]
    return units


def _e11_units(budget: Budget) -> list[Unit]:
    units = [u for u in _e6_units(budget) if u.key.startswith(("train/base/", "train/sft-long/", "eval/sft-long/",
                                                               "train/grpo-lr", "eval-val/"))]
    sweep = tuple(f"eval-val/grpo-lr{lr:g}/seed-{budget.seeds[0]}" for lr in GRPO_LRS)
    for s in budget.seeds:
        c = arm_configs(budget, s)
        for n in E11_NS:
            units += [_train_unit(f"train/grpo-n{n}/seed-{s}", c[f"grpo-n{n}"], f"train/sft-long/seed-{s}", sweep),
                      _eval_unit(budget, f"eval/grpo-n{n}/seed-{s}", f"train/grpo-n{n}/seed-{s}", c["sft-long"].lab,
                                 "test", ("arith",))]
    return units


# ----- statistics --------------------------------------------------------------------------------

def pooled(raws: Mapping[str, dict], arm: str, seeds: Sequence[int], metric: str, family: str = "") -> np.ndarray:
    """float[seeds, questions]: `metric` per question of eval/ARM/seed-S (only `family` if given),
    questions ordered by id so seeds and arms line up."""
    out = []
    for s in seeds:
        r = raws[f"eval/{arm}/seed-{s}"]
        keep = [i for i, f in enumerate(r["families"]) if not family or f == family]
        order = sorted(keep, key=lambda i: r["ids"][i])
        out.append([r[metric][i] for i in order])
    return np.asarray(out, dtype=float)


def paired_interval(a: np.ndarray, b: np.ndarray):
    """Two-level bootstrap interval of the mean of a - b (per seed per question), float[seeds, questions]."""
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same seeds x questions, got {a.shape} and {b.shape}")
    return bootstrap_interval(a - b)


def _main_k(budget: Budget) -> int:
    return 8 if 8 in budget.ks else max(budget.ks)


CHANCE = 0.0
"""The rate of guessing the answer of a lab question: the answer is an integer written out in full,
so a guess is right with probability about 0 (we take 0); a model whose Pass@1 interval includes 0
is flagged at chance."""


def _at_chance(raws, arm, seeds, family: str = "") -> bool:
    return bootstrap_interval(pooled(raws, arm, seeds, "pass@1", family)).low <= CHANCE


def _row(claim: Claim, a: np.ndarray, b: np.ndarray, at_chance: bool, note: str, extra=None,
         figure: str = "") -> ClaimResult:
    iv = paired_interval(a, b)
    chance_note = " A model is at chance (Pass@1 interval includes 0, the guessing rate)." if at_chance else ""
    return ClaimResult(claim, iv, verdict(iv, claim.direction, at_chance=at_chance), n=a.shape[1], seeds=a.shape[0],
                       note=note + chance_note, extra=dict(extra or {}), figure=figure)


SCALE_NOTE = ("Lab scale: {q} training questions, a few epochs on 2 CPU cores; the paper trains 7B-72B models "
              "on tens of thousands of trajectories.")

TRAINING_ARMS = {"base": "base", "SFT short": "sft-short", "SFT long": "sft-long", "zero-RL GRPO": "grpo-zero",
                 "SFT long -> GRPO": "sft-long-grpo"}
"""The arms of E6 and E7 (figure label -> arm), drawn in one figure (figures/e6_e7_arms.png)."""


def _summarise_e6(budget, raws, figures):
    k, seeds = _main_k(budget), budget.seeds
    P = lambda arm, m: pooled(raws, arm, seeds, m)  # noqa: E731
    chance = lambda *arms: any(_at_chance(raws, x, seeds) for x in arms)  # noqa: E731
    note = SCALE_NOTE.format(q=lab_config(budget, "long").train_size)
    c = E6.claims
    cfg = arm_configs(budget, seeds[0])
    tokens = {a: cfg[a].steps * cfg[a].batch_size * cfg[a].seq_len for a in ("base", "sft-short", "sft-long")}
    tokens |= {a: cfg[a].steps * cfg[a].questions_per_step * cfg[a].group_size * cfg[a].max_new_tokens
               for a in ("grpo-zero",)}  # GRPO: the rollouts' token room (an upper bound)
    view = {"equal": f"{SFT_EPOCHS} epochs over the same questions", "trained_tokens": tokens,
            "steps": {a: cfg[a].steps for a in tokens}}
    note += f" Equal epochs; the arms' trained tokens differ (equal-tokens view in extra: {tokens})."
    fig = arms_figure(raws, TRAINING_ARMS, seeds, budget.ks, k, figures, "e6_e7_arms", "E6/E7: training arms")
    return [_row(c[0], P("sft-long", f"pass@{k}"), P("sft-short", f"pass@{k}"), chance("sft-long", "sft-short"), note,
                 view, fig),
            _row(c[1], P("grpo-zero", f"pass@{k}"), P("sft-short", f"pass@{k}"), chance("grpo-zero", "sft-short"),
                 note + " Zero-RL explores only through the base's small long-trajectory prior (BASE_MIX); it made "
                 f"{grpo_passes(arm_configs(budget, seeds[0])['grpo-zero']):.2f} passes over the questions, the "
                 f"SFT arms {SFT_EPOCHS}.", figure=fig),
            _row(c[2], P("grpo-zero", f"mg-pass@{k}"), P("sft-short", f"mg-pass@{k}"),
                 chance("grpo-zero", "sft-short"), note, figure=fig)]


def _summarise_e7(budget, raws, figures):
    k, seeds = _main_k(budget), budget.seeds
    P = lambda arm, m: pooled(raws, arm, seeds, m)  # noqa: E731
    ch = lambda *arms: any(_at_chance(raws, x, seeds) for x in arms)  # noqa: E731
    passes = grpo_passes(arm_configs(budget, seeds[0])["sft-long-grpo"])
    note = (SCALE_NOTE.format(q=lab_config(budget, "long").train_size) +
            f" GRPO made {passes:.2f} passes over the training questions (the paper: an epoch; more does not "
            "fit 2 cores), at the lr chosen on validation.")
    lr = raws.get(f"train/sft-long-grpo/seed-{seeds[0]}", {}).get("lr")
    c = E7.claims
    fig = arms_figure(raws, TRAINING_ARMS, seeds, budget.ks, k, figures, "e6_e7_arms", "E6/E7: training arms")
    return [_row(c[0], P("sft-long-grpo", f"pass@{k}"), P("grpo-zero", f"pass@{k}"), ch("sft-long-grpo", "grpo-zero"),
                 note, {"lr": lr}, fig),
            _row(c[1], P("sft-long-grpo", f"mg-pass@{k}"), P("grpo-zero", f"mg-pass@{k}"),
                 ch("sft-long-grpo", "grpo-zero"), note, {"lr": lr}, fig),
            _row(c[2], P("sft-long-grpo", f"pass@{k}"), P("sft-long", f"pass@{k}"), ch("sft-long-grpo", "sft-long"),
                 note + " Small-pool GRPO often degrades its SFT start at lab scale.", {"lr": lr}, fig)]


def _summarise_e9(budget, raws, figures):
    k, seeds = _main_k(budget), budget.seeds
    out = []
    per_family = {}
    fig = families_figure(raws, seeds, k, figures)
    for fam in ALL_FAMILIES:
        a, b = (pooled(raws, arm, seeds, f"pass@{k}", fam) for arm in ("sft-long-fams", "base-all"))
        per_family[fam] = paired_interval(a, b).as_dict() | {"base": bootstrap_interval(b).as_dict()}
    for claim, fams in zip(E9.claims, (TRAINED_FAMILIES, tuple(f for f in ALL_FAMILIES if f not in TRAINED_FAMILIES))):
        a = np.concatenate([pooled(raws, "sft-long-fams", seeds, f"pass@{k}", f) for f in fams], axis=1)
        b = np.concatenate([pooled(raws, "base-all", seeds, f"pass@{k}", f) for f in fams], axis=1)
        chance = any(_at_chance(raws, "sft-long-fams", seeds, f) for f in fams)
        out.append(_row(claim, a, b, chance, "Per family (with the base's starting point) in extra; one family "
                        "can carry the whole gain.", {"per_family": per_family}, fig))
    return out


def _summarise_e10(budget, raws, figures):
    k, seeds = _main_k(budget), budget.seeds
    lo, hi = f"k{min(E10_KS)}", f"k{max(E10_KS)}"
    arms = {f"k{x}": bootstrap_interval(pooled(raws, f"k{x}", seeds, "pass@1")).as_dict() for x in E10_KS}
    a, b = pooled(raws, hi, seeds, f"pass@{k}"), pooled(raws, lo, seeds, f"pass@{k}")
    fig = arms_figure(raws, {f"k={x} trajectories": f"k{x}" for x in E10_KS}, seeds, budget.ks, k, figures,
                      "e10_trajectories", "E10: distinct trajectories per question")
    return [_row(E10.claims[0], a, b, _at_chance(raws, hi, seeds) or _at_chance(raws, lo, seeds),
                 f"{E10_QUESTIONS} questions at lab scale, equal slots per question.", {"pass@1": arms}, fig)]


def across_seed_variance(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, np.ndarray]:
    """Variance across seeds of the per-seed mean of float[seeds, questions], and `resamples`
    bootstrap replicates of it (seeds resampled, then questions within each)."""
    rng = np.random.default_rng(seed)
    g, m = values.shape
    est = float(np.var(values.mean(axis=1), ddof=1)) if g > 1 else math.nan
    reps = np.empty(resamples)
    for i in range(resamples):
        s = rng.integers(0, g, g)
        q = rng.integers(0, m, (g, m))
        reps[i] = np.var(values[s[:, None], q].mean(axis=1), ddof=1) if g > 1 else math.nan
    return est, reps


def _summarise_e11(budget, raws, figures):
    k, seeds = _main_k(budget), budget.seeds
    lo, hi = f"grpo-n{min(E11_NS)}", f"grpo-n{max(E11_NS)}"
    note = "GRPO on a small question pool at lab scale can degrade its SFT start; 'better' may mean 'degrades less'."
    fig = arms_figure(raws, ({"SFT long (start)": "sft-long"} if f"eval/sft-long/seed-{seeds[0]}" in raws else {})
                      | {f"update_n={n}": f"grpo-n{n}" for n in E11_NS}, seeds, budget.ks, k, figures, "e11_update_n",
                      "E11: rollouts in the GRPO update")
    better = _row(E11.claims[0], pooled(raws, hi, seeds, f"pass@{k}"), pooled(raws, lo, seeds, f"pass@{k}"),
                  _at_chance(raws, hi, seeds), note, figure=fig)
    var = {}
    reps = {}
    for n in E11_NS:
        var[n], reps[n] = across_seed_variance(pooled(raws, f"grpo-n{n}", seeds, f"pass@{k}"))
    d = reps[max(E11_NS)] - reps[min(E11_NS)]  # the same seed/question draws (same rng seed): paired
    d = d[np.isfinite(d)]
    iv = (Interval(var[max(E11_NS)] - var[min(E11_NS)], float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975)),
                   len(seeds), 0.95, "two-level bootstrap") if d.size else None)
    stable = ClaimResult(E11.claims[1], iv, verdict(iv, E11.claims[1].direction), n=better.n, seeds=len(seeds),
                         note=f"Variance of the per-seed mean Pass@{k} across {len(seeds)} seeds (few seeds: wide).",
                         extra={"variance": {str(n): v for n, v in var.items()}}, figure=fig)
    return [better, stable]


# ----- figures -----------------------------------------------------------------------------------

def _percent_bars(ivs: Sequence[Interval]) -> tuple[list[float], list[list[float]]]:
    """Estimates and matplotlib's asymmetric yerr [[below], [above]] of rate intervals, in percent."""
    return ([100 * iv.estimate for iv in ivs],
            [[100 * (iv.estimate - iv.low) for iv in ivs], [100 * (iv.high - iv.estimate) for iv in ivs]])


def arms_figure(raws: Mapping[str, dict], arms: Mapping[str, str], seeds: Sequence[int], ks: Sequence[int],
                main_k: int, figures: Path | None, name: str, title: str) -> str:
    """Pass@k and mG-Pass@k against k (95% two-level bootstrap intervals over seeds x questions),
    and each seed's mean Pass@main_k (the training variance), of `arms` (label -> arm) as
    figures/NAME.png; returns its path relative to the report ("" when `figures` is None)."""
    if figures is None:
        return ""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for j, (label, arm) in enumerate(arms.items()):
        for ax, metric in zip(axes[:2], ("pass", "mg-pass")):
            est, err = _percent_bars([bootstrap_interval(pooled(raws, arm, seeds, f"{metric}@{k}")) for k in ks])
            ax.errorbar(np.asarray(ks) * (1 + 0.03 * (j - len(arms) / 2)), est, yerr=err, marker="o", capsize=3,
                        label=label)
        per_seed = pooled(raws, arm, seeds, f"pass@{main_k}").mean(axis=1)
        axes[2].plot([j] * len(per_seed), 100 * per_seed, "o", alpha=0.7)
    for ax, metric in zip(axes[:2], ("Pass", "mG-Pass")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k (%)")
    axes[0].legend(fontsize=7)
    axes[2].set_xticks(range(len(arms)), list(arms), rotation=30, ha="right", fontsize=7)
    axes[2].set_ylabel(f"Pass@{main_k} per seed (%)")
    fig.suptitle(f"{title} ({len(seeds)} seeds; 95% two-level bootstrap intervals)", fontsize=10)
    return str(save_figure(fig, Path(figures) / f"{name}.png").relative_to(Path(figures).parent))


def families_figure(raws: Mapping[str, dict], seeds: Sequence[int], k: int, figures: Path | None) -> str:
    """E9: Pass@k of the base and of SFT on TRAINED_FAMILIES, per family, with 95% intervals, as
    figures/e9_families.png ("" when `figures` is None)."""
    if figures is None:
        return ""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for j, arm in enumerate(("base-all", "sft-long-fams")):
        est, err = _percent_bars([bootstrap_interval(pooled(raws, arm, seeds, f"pass@{k}", f)) for f in ALL_FAMILIES])
        ax.bar(np.arange(len(ALL_FAMILIES)) + 0.4 * (j - 0.5), est, width=0.4, yerr=err, capsize=3, label=arm)
    ax.set_xticks(range(len(ALL_FAMILIES)),
                  [f + (" (trained)" if f in TRAINED_FAMILIES else "") for f in ALL_FAMILIES], fontsize=8)
    ax.set_ylabel(f"Pass@{k} (%)")
    ax.legend(fontsize=7)
    ax.set_title(f"E9: per family ({len(seeds)} seeds; 95% two-level bootstrap)", fontsize=10)
    return str(save_figure(fig, Path(figures) / "e9_families.png").relative_to(Path(figures).parent))


def _paired(measure: str, a: str, b: str, *, where: str = "", over: str = "") -> str:
    """A claim's measure text: `measure` of arm `a` minus arm `b` (`where`: on which questions),
    paired over questions, two-level bootstrap (`over`: " over seeds x questions" when spelled out)."""
    return f"{measure} of {a} minus {b}{where}, paired, two-level bootstrap{over}"


E6 = Experiment("E6", "SFT on short vs long trajectories vs zero-RL GRPO, equal epochs", (
    Claim("E6a", "SFT on long trajectories beats SFT on short ones", "AIME24 Pass@8 36.69 vs 20.34",
          _paired("Pass@8", "sft-long", "sft-short", over=" over seeds x questions"), 1),
    Claim("E6b", "Zero-RL GRPO beats SFT on short trajectories in Pass@8", "27.37 vs 20.34",
          _paired("Pass@8", "grpo-zero", "sft-short"), 1),
    Claim("E6c", "Zero-RL GRPO has the lowest mG-Pass@8 (below SFT-short)", "4.08 vs 7.43",
          _paired("mG-Pass@8", "grpo-zero", "sft-short"), -1)),
    _e6_units, _summarise_e6)
E7 = Experiment("E7", "SFT then GRPO vs zero-RL GRPO (and vs SFT alone)", (
    Claim("E7a", "SFT->GRPO beats zero-RL GRPO in Pass@8", "35.87 vs 27.37 (+31%)",
          _paired("Pass@8", "sft-long-grpo", "grpo-zero"), 1),
    Claim("E7b", "SFT->GRPO beats zero-RL GRPO in mG-Pass@8", "11.23 vs 4.08 (+175%)",
          _paired("mG-Pass@8", "sft-long-grpo", "grpo-zero"), 1),
    Claim("E7c", "GRPO after SFT improves on the SFT model", "not a number of the paper (our second view)",
          _paired("Pass@8", "sft-long-grpo", "sft-long"), 1)),
    _e6_units, _summarise_e7)
E9 = Experiment("E9", "Training on some families helps within and across families", (
    Claim("E9a", "Trained families improve over the base", "AIME24 / LiveMathBench gains",
          _paired("Pass@8", "sft-long-fams", "base-all", where=" on the trained families"), 1),
    Claim("E9b", "Other families improve over the base", "GPQA / LiveCodeBench gains",
          _paired("Pass@8", "sft-long-fams", "base-all", where=" on the other families"), 1)),
    _e9_units, _summarise_e9)
E10 = Experiment("E10", "More distinct trajectories per question at equal training frequency", (
    Claim("E10a", "More trajectories per question -> better", "accuracy rises with k (1..32)",
          _paired("Pass@8", f"k={max(E10_KS)}", f"k={min(E10_KS)}"), 1),), _e10_units,
    _summarise_e10)
E11 = Experiment("E11", "More rollouts in the GRPO update -> better and stabler", (
    Claim("E11a", "More rollouts in the update -> better", "n in {1..16}",
          _paired("Pass@8", f"update_n={max(E11_NS)}", f"update_n={min(E11_NS)}"), 1),
    Claim("E11b", "More rollouts in the update -> stabler", "training curves",
          f"across-seed variance of Pass@8 at n={max(E11_NS)} minus at n={min(E11_NS)}, bootstrap over "
          "seeds x questions", -1)), _e11_units, _summarise_e11)

EXPERIMENTS = (E6, E7, E9, E10, E11)
