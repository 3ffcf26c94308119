"""metareason.reproduce.training: the arms' configs (equal epochs, same questions, lr chosen on
validation), the summaries on synthetic raw results (verdict directions), and one smoke unit."""

import dataclasses

import numpy as np
import pytest

from metareason.format import LabFormat
from metareason.reproduce import training as T
from metareason.reproduce.base import BUDGETS
from metareason.tasks.lab import lab_records

SMOKE = BUDGETS["smoke"]


def _brute_tokens(lab):
    fmt = LabFormat()
    return sum(len(fmt.sft_example(r)["tokens"]) for r in lab_records(lab, "train"))


def test_sft_arms_pass_equally_often_over_the_same_questions():
    cfg = T.arm_configs(SMOKE, 0)
    labs = {a: cfg[a].lab for a in ("base", "sft-short", "sft-long")}
    assert len({dataclasses.replace(lab, style="long", mix=()) if hasattr(lab, "mix") else
                dataclasses.replace(lab, style="long") for lab in labs.values()}) == 1  # one question config
    for arm, lab in labs.items():
        c = cfg[arm]
        cap = c.batch_size * c.seq_len * T.FILL
        passes = c.steps * cap / _brute_tokens(lab)  # tokens the steps hold / tokens of one pass
        assert T.SFT_EPOCHS <= passes < T.SFT_EPOCHS + cap / _brute_tokens(lab) + 1e-9 or c.steps == 2, arm
    # long trajectories are longer, so equal epochs give the long arm more steps (not equal steps)
    assert cfg["sft-long"].steps > cfg["sft-short"].steps
    # GRPO: one pass of questions_per_step over the same questions
    g = cfg["grpo-zero"]
    assert g.lab.train_size == labs["sft-long"].train_size
    from metareason.train.trajectories import question_schedule
    seen = question_schedule(g.lab.train_size, g.questions_per_step, g.steps, g.seed)
    assert T.grpo_passes(g) == pytest.approx(seen.size / g.lab.train_size)
    assert g.steps == SMOKE.steps(T.GRPO_STEPS) and cfg["sft-long-grpo"].steps == g.steps


def test_sft_styles_draw_the_same_training_questions():
    cfg = T.arm_configs(SMOKE, 0)
    recs = {a: list(lab_records(cfg[a].lab, "train")) for a in ("base", "sft-short", "sft-long", "grpo-zero")}
    qs = [[r["question"] for r in rs] for rs in recs.values()]
    assert qs[0] == qs[1] == qs[2] == qs[3]
    assert {r["style"] for r in recs["sft-short"]} == {"short"} and {r["style"] for r in recs["sft-long"]} == {"long"}
    n_long = sum(r["style"] == "long" for r in recs["base"])
    assert n_long == round(0.03 * len(recs["base"]))  # the trajectory prior, exact count


def test_e7_pairs_the_same_questions_and_seeds_share_them():
    c0, c1 = T.arm_configs(SMOKE, 0), T.arm_configs(SMOKE, 1)
    assert c0["grpo-zero"].lab == c0["sft-long-grpo"].lab == c1["sft-long-grpo"].lab
    assert c0["sft-long"].seed == 0 and c1["sft-long"].seed == 1
    units = {u.key: u for u in T.E7.units(SMOKE)}
    assert units["eval/grpo-zero/seed-0"].settings == {**units["eval/sft-long-grpo/seed-0"].settings,
                                                       "model": "train/grpo-zero/seed-0"}
    assert units["train/sft-long-grpo/seed-1"].needs[0] == "train/sft-long/seed-1"
    assert units["train/grpo-zero/seed-1"].needs[0] == "train/base/seed-1"


def test_the_lr_is_chosen_on_validation_only():
    assert T.choose_lr({1e-4: 0.5, 3e-4: 0.7, 3e-5: 0.7}) == 3e-5  # best; tie -> the smaller
    units = {u.key: u for u in T.E7.units(SMOKE)}
    sweep = [k for k in units["train/sft-long-grpo/seed-1"].needs if k.startswith("eval")]
    assert len(sweep) == len(T.GRPO_LRS)
    assert all(units[k].settings["split"] == "validation" for k in sweep)
    assert all(u.settings["split"] == "test" for k, u in units.items() if k.startswith("eval/"))
    with pytest.raises(ValueError):
        T.choose_lr({})


def test_base_carries_the_trajectory_prior_when_lab_has_mix():
    names = {f.name for f in dataclasses.fields(type(T.arm_configs(SMOKE, 0)["base"].lab))}
    base = T.arm_configs(SMOKE, 0)["base"].lab
    if "mix" in names:
        assert base.mix == T.BASE_MIX
    assert base.style == "none" and 0.01 <= T.BASE_MIX[0][2] <= 0.05


def test_e10_k_distinct_at_equal_frequency():
    cfg = T.arm_configs(SMOKE, 0)
    ks = [cfg[f"k{k}"] for k in T.E10_KS]
    assert [c.k_trajectories for c in ks] == list(T.E10_KS)
    assert len({(c.slots_per_question, c.steps, c.lab) for c in ks}) == 1
    assert ks[0].lab.trajectories_per_question == max(T.E10_KS)


def _raws(budget, arms, effect, families=("arith",), q=20, noise=0.0, seed=0):
    """Synthetic eval raws: Pass@k per question = base + effect[arm] (clipped), same ids per seed."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, q)
    raws = {}
    for arm in arms:
        for s in budget.seeds:
            v = np.clip(base + effect.get(arm, 0.0) + noise * rng.standard_normal(q) * (1 + 3 * (arm == "grpo-n1")),
                        0, 1)
            fams = [families[i % len(families)] for i in range(q)]
            raws[f"eval/{arm}/seed-{s}"] = {"ids": [f"q{i:03d}" for i in range(q)][::-1], "families": fams,
                                            **{f"{m}@{k}": list(v[::-1]) for m in ("pass", "mg-pass")
                                               for k in budget.ks}}
    return raws


def test_summaries_give_the_right_directions():
    b = dataclasses.replace(BUDGETS["lab"], seeds=(0, 1, 2))
    raws = _raws(b, ["base", "sft-short", "sft-long", "grpo-zero", "sft-long-grpo"],
                 {"sft-long": 0.3, "sft-short": 0.0, "grpo-zero": 0.1, "sft-long-grpo": 0.35})
    rows = {r.claim.id: r for r in T.E6.summarise(b, raws, None) + list(T.E7.summarise(b, raws, None))}
    assert rows["E6a"].verdict == "supported" and rows["E6a"].measured.estimate > 0.2
    assert rows["E6b"].verdict == "supported"
    assert rows["E6c"].verdict == "contradicted"  # grpo-zero mG above sft-short; the claim says below
    assert rows["E7a"].verdict == "supported" and rows["E7b"].verdict == "supported"
    assert rows["E7c"].verdict == "supported" and rows["E7a"].seeds == 3 and rows["E7a"].n == 20
    for r in rows.values():
        assert -1 <= r.measured.low <= r.measured.estimate <= r.measured.high <= 1
    raws = _raws(b, ["base-all", "sft-long-fams"], {"sft-long-fams": -0.2}, families=T.ALL_FAMILIES, q=40)
    e9 = T.E9.summarise(b, raws, None)
    assert [r.verdict for r in e9] == ["contradicted", "contradicted"]
    assert set(e9[0].extra["per_family"]) == set(T.ALL_FAMILIES)
    raws = _raws(b, [f"k{k}" for k in T.E10_KS], {f"k{max(T.E10_KS)}": 0.0})
    assert T.E10.summarise(b, raws, None)[0].verdict == "inconclusive"  # identical arms: no difference


def test_e11_stability_is_across_seed_variance():
    b = dataclasses.replace(BUDGETS["lab"], seeds=(0, 1, 2, 3, 4))
    rng = np.random.default_rng(1)
    raws = {}
    for n in T.E11_NS:
        for s in b.seeds:
            shift = rng.normal(0, 0.2 if n == 1 else 0.005)  # n=1: seeds far apart
            v = list(np.clip(0.5 + shift + 0.05 * rng.standard_normal(30), 0, 1))
            raws[f"eval/grpo-n{n}/seed-{s}"] = {"ids": [str(i) for i in range(30)], "families": ["arith"] * 30,
                                                **{f"{m}@{k}": v for m in ("pass", "mg-pass") for k in b.ks}}
    better, stable = T.E11.summarise(b, raws, None)
    var1 = float(np.var([np.mean(raws[f"eval/grpo-n1/seed-{s}"]["pass@8"]) for s in b.seeds], ddof=1))
    assert stable.extra["variance"]["1"] == pytest.approx(var1)
    assert stable.claim.direction == -1 and stable.measured.estimate < 0
    assert stable.verdict == "supported"


@pytest.mark.slow
def test_one_smoke_sft_unit_runs(tmp_path):
    unit = next(u for u in T.E10.units(SMOKE) if u.key == "train/k1/seed-0")
    raw = unit.run(tmp_path / "u", {})
    assert (tmp_path / "u" / "run" / "summary.json").exists() and raw["run"].endswith("run")


def test_per_question_matches_brute_force_subsets():
    import itertools
    rows = [{"id": "b", "family": "arith", "correct": [1, 0, 1, 0, 0, 0], "lengths": [3] * 6},
            {"id": "a", "family": "arith", "correct": [0] * 6, "lengths": [5] * 6}]
    out = T.per_question(rows, (1, 4))
    for row, p1, p4, mg4 in zip(rows, out["pass@1"], out["pass@4"], out["mg-pass@4"]):
        subsets = list(itertools.combinations(row["correct"], 4))
        assert p4 == pytest.approx(np.mean([any(s) for s in subsets]))
        assert p1 == pytest.approx(np.mean(row["correct"]))
        # mG-Pass@4: (2/4) * sum over i in {3, 4} of P(at least i correct of 4)
        assert mg4 == pytest.approx(0.5 * sum(np.mean([sum(s) >= i for s in subsets]) for i in (3, 4)))
    assert out["ids"] == ["b", "a"] and out["mean_length"] == [3.0, 5.0]


def test_e10_configs_build_k_distinct_training_trajectories():
    """E10's arms: k16's lab gives 16 pairwise distinct long trajectories per training question,
    and its test split (evaluation questions) builds too."""
    lab = T.arm_configs(SMOKE, 0)["k16"].lab
    train = list(lab_records(lab, "train"))
    assert all(len(set(r["generations"])) == len(r["generations"]) == 16 and r["style"] == "long" for r in train)
    assert len(list(lab_records(lab, "test"))) == lab.eval_size


def test_training_figures_are_drawn_and_named_by_their_claims(tmp_path):
    b = dataclasses.replace(BUDGETS["lab"], seeds=(0, 1, 2))
    figures = tmp_path / "figures"
    raws = _raws(b, list(T.TRAINING_ARMS.values()) + ["base-all", "sft-long-fams"] + [f"k{k}" for k in T.E10_KS]
                 + [f"grpo-n{n}" for n in T.E11_NS], {"sft-long": 0.3}, families=T.ALL_FAMILIES, q=40)
    rows = [r for e in T.EXPERIMENTS for r in e.summarise(b, raws, figures)]
    named = {r.claim.id: r.figure for r in rows}
    assert named["E6a"] == named["E7a"] == "figures/e6_e7_arms.png" and named["E9b"] == "figures/e9_families.png"
    assert named["E10a"] == "figures/e10_trajectories.png" and named["E11b"] == "figures/e11_update_n.png"
    for path in set(named.values()):
        assert (tmp_path / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(r.figure == "" for e in T.EXPERIMENTS for r in e.summarise(b, raws, None))
