"""One GRPO step (rollouts + update) of ours side by side with Tunix's GRPO learner (issue 19, item 5).

Both run the SAME tiny Qwen2 (our `random_params`, written by `save_hf_checkpoint` and read by
Tunix's own safetensors loader, as tests/model/test_tunix.py does) with the same settings:
questions per step Q, group size G, max new tokens N (no stop token: both always decode N tokens),
temperature 1, top_p 1, epochs (Tunix `num_iterations`) x minibatches, KL coefficient (k3 /
"low_var_kl", to a frozen reference copy), clip 0.2, AdamW lr 1e-4 (no weight decay, constant),
sequence-mean-token-mean aggregation, the same Q prompts (P random token ids each) and the same
reward (the fraction of completion tokens below vocab/2, computed from the token ids; Tunix's
reward function gets text, which here is the ids written out, so it sees exactly the same thing).

Ours is `metareason.train.rl._grpo_step` (the step `metareason rl` runs: `sample_rollouts`,
rewards, group advantages, old + reference log-probs, epochs x minibatches of `make_train_step`
over `grpo_loss`) with a stand-in format (prompt = the ids, verdict = the reward above). Tunix's is
`GRPOLearner._run_global_step` on an `RLCluster` (vanilla rollout on its `Sampler`, actor and
rollout sharing one model on a 1-device mesh, a separate reference model), i.e. what
`GRPOLearner.train` runs per global step, driven one step at a time.

Timed per step, after `--warmup` steps (compile; their times are reported separately):
  rollout: the sampler call alone (ours `sample_rollouts`, Tunix `RLCluster.generate`), both
           ending with the tokens on the host; rollout tokens/s = Q x G x N / that time;
  step:    the whole step, ended by blocking on the updated parameters;
  rest:    step - rollout (rewards, advantages, old + reference log-probs, the updates).
Ours and Tunix's alternate step by step in one process (`--repeats` timed steps each); the
ratios are medians of ours/Tunix speed (Tunix time / our time: > 1 means ours is faster).

Minibatches: ours samples Q x G rollouts once and takes `epochs x minibatches` updates on them;
Tunix's learner samples per minibatch (Q/M prompts x G each) and takes `epochs` updates on each.
With the default M = 1 the two are the same algorithm; with M > 1 the same numbers of rollouts and
updates, in a different order.

Needs google-tunix 0.1.7 beside this environment (the side environment of .ci/run: .ci-tunix):

    .ci-tunix/bin/python benchmarks/grpo_tunix.py --out benchmarks/results/grpo_tunix_cpu2.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from metareason.model import ModelConfig, save_hf_checkpoint  # noqa: E402

#: Model shapes: "tiny" is tests/reference.py's TINY["qwen2"]; "small" a larger CPU shape.
MODELS = {
    "tiny": dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2),
    "small": dict(vocab_size=1024, hidden_size=256, intermediate_size=704, num_layers=4, num_heads=8,
                  num_kv_heads=2),
}


def model_config(name: str, scan_unroll: int = 1) -> ModelConfig:
    """`scan_unroll` (ours only; 0: the number of layers, as the lab presets of
    `metareason.model.presets` set it) unrolls our layer scan: XLA:CPU's backward pass through the
    rolled scan slices and restacks every layer's residuals and transposes them, which costs the
    update ~20% on the small shape (Tunix's model loops over its layers in Python)."""
    return ModelConfig(family="qwen2", rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=2048,
                       **MODELS[name], scan_unroll=scan_unroll or MODELS[name]["num_layers"])


def reward_of(ids, vocab: int) -> float:
    """The shared reward: the fraction of completion tokens below vocab / 2."""
    ids = np.asarray(ids)
    return float(np.mean(ids < vocab // 2)) if ids.size else 0.0


# ---------------------------------------------------------------------------------------- ours

@dataclasses.dataclass
class _Verdict:
    reward: float
    correct: bool = False
    well_formed: bool = True


class _Format:
    """The piece of `metareason.format` that `_grpo_step` uses: prompts are the records' ids, the
    verdict is the shared reward, no stop token."""

    def __init__(self, vocab: int):
        self.vocab, self.stop_tokens, self.pad_id = vocab, (), 0

    def prompt(self, record):
        return list(record["ids"])

    def verdict(self, tokens, record):
        return _Verdict(reward_of(tokens, self.vocab))


def build_ours(a, config, params, prompts):
    import metareason.train.rl as rl
    from metareason.parallel import Placement
    from metareason.train.grpo import GRPOLossConfig, grpo_loss
    from metareason.train.state import OptimizerConfig, init_state, make_optimizer
    from metareason.train.step import make_train_step

    loss = GRPOLossConfig(clip_low=a.clip, clip_high=a.clip, kl_coef=a.kl, aggregation="seq-mean-token-mean")
    opt = OptimizerConfig(lr=a.lr, warmup_steps=0, final_lr_fraction=1.0, weight_decay=0.0, clip_norm=1e9)
    cfg = rl.GRPOConfig(questions_per_step=a.questions, group_size=a.group, max_new_tokens=a.new, temperature=1.0,
                        top_p=1.0, epochs_per_batch=a.epochs, minibatches=a.minibatches, loss=loss, optimizer=opt,
                        advantage="grpo")
    place = Placement.from_text("")
    params = jax.tree.map(jnp.asarray, params)
    ref = jax.tree.map(lambda x: x.copy(), params)
    optimizer = make_optimizer(opt, 10**6)
    state = place.state(init_state(params, optimizer, 0), config, optimizer)
    train_step = make_train_step(config, optimizer, lambda p, b, *, config: grpo_loss(
        p, b, config=config, loss=loss, temperature=1.0))
    records = [{"ids": p} for p in prompts]
    times = []
    sample = rl.sample_rollouts

    def timed_sample(*args, **kw):
        t = time.perf_counter()
        out = sample(*args, **kw)
        times.append(time.perf_counter() - t)
        return out

    rl.sample_rollouts = timed_sample  # the name _grpo_step calls
    step_fn = rl._grpo_step(cfg, train_step, fmt=_Format(config.vocab_size), config=config, records=records,
                            ref_params=ref, place=place)
    box = {"state": state, "i": 0}

    def step():
        t = time.perf_counter()
        box["state"], m = step_fn(box["state"], (box["i"], np.arange(a.questions)))
        jax.block_until_ready(box["state"].params)
        box["i"] += 1
        assert m["finite"], m
        return time.perf_counter() - t, times[-1], m["reward"]
    return step


# --------------------------------------------------------------------------------------- Tunix

class IdTokenizer:
    """A tokenizer for Tunix whose text is the token ids written out ("12 7 40"); eos and pad are
    -1, which is never sampled (so no rollout stops early and no sampled token counts as padding),
    no BOS, and with prompts of one length no pad ever reaches the model."""

    def encode(self, text, **kw):
        return [int(t) for t in text.split()]

    def decode(self, ids, **kw):
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self):
        return None  # no BOS is prepended (Tunix's sampler adds one when this is truthy)

    def eos_id(self):
        return -1

    def pad_id(self):
        return -1


def build_tunix(a, config, hf_dir, prompts):
    from tunix.models.qwen2 import model as qwen2_model
    from tunix.models.qwen2 import params as qwen2_params
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.rollout import base_rollout

    tcfg = qwen2_model.ModelConfig(
        num_layers=config.num_layers, vocab_size=config.vocab_size, embed_dim=config.hidden_size,
        hidden_dim=config.intermediate_size, num_heads=config.num_heads, head_dim=config.head_dim,
        num_kv_heads=config.num_kv_heads, rope_theta=int(config.rope_theta), norm_eps=config.rms_norm_eps,
        use_tied_embedding=config.tie_word_embeddings)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))  # Auto axes
    with mesh:
        actor = qwen2_params.create_model_from_safe_tensors(str(hf_dir), tcfg, mesh=mesh)
        reference = qwen2_params.create_model_from_safe_tensors(str(hf_dir), tcfg, mesh=mesh)
    mini = a.questions // a.minibatches
    training = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optax.adamw(a.lr, b1=0.9, b2=0.98, weight_decay=0.0), eval_every_n_steps=10**9,
        max_steps=10**9, mini_batch_size=mini, train_micro_batch_size=mini)
    rollout = base_rollout.RolloutConfig(
        max_tokens_to_generate=a.new, temperature=1.0, top_p=1.0, top_k=None, max_prompt_length=a.prompt,
        kv_cache_size=a.prompt + a.new + 8, eos_tokens=[-1])
    cluster = rl_cluster_lib.RLCluster(
        actor=actor, reference=reference if a.kl > 0 else None, tokenizer=IdTokenizer(),
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={rl_cluster_lib.Role.ACTOR: mesh, rl_cluster_lib.Role.REFERENCE: mesh,
                          rl_cluster_lib.Role.ROLLOUT: mesh},
            rollout_engine="vanilla", offload_to_cpu=False, training_config=training, rollout_config=rollout))
    algo = grpo_learner.GRPOConfig(num_generations=a.group, num_iterations=a.epochs, beta=a.kl, epsilon=a.clip,
                                   kl_loss_mode="low_var_kl", loss_agg_mode="sequence-mean-token-mean")
    vocab = config.vocab_size
    rewards = []

    def reward_fn(prompts, completions, **kw):
        r = [reward_of(IdTokenizer().encode(c), vocab) for c in completions]
        rewards.append(float(np.mean(r)))
        return r

    learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=reward_fn)
    # what GRPOLearner.train sets up before its loop over global steps
    learner._rollout_micro_batch_size = learner._rollout_micro_batch_size or mini
    learner._compute_logps_micro_batch_size = learner._compute_logps_micro_batch_size or mini
    target = math.lcm(learner._rollout_micro_batch_size, learner._compute_logps_micro_batch_size)
    times = []
    generate = cluster.generate

    def timed_generate(*args, **kw):
        t = time.perf_counter()
        out = generate(*args, **kw)
        times.append(time.perf_counter() - t)
        return out

    cluster.generate = timed_generate
    texts = [IdTokenizer().decode(p) for p in prompts]

    def step():
        n = len(times)
        batches = iter([{"prompts": np.array(texts[i * mini:(i + 1) * mini])} for i in range(a.minibatches)])
        t = time.perf_counter()
        learner._run_global_step(a.questions, mini, target, 1, batches, None, False)
        cluster.global_steps += 1  # train() does this when actor and rollout share weights
        jax.block_until_ready(jax.tree.leaves(nnx_state(cluster.actor_trainer.model)))
        return time.perf_counter() - t, sum(times[n:]), rewards[-1]
    return step


def nnx_state(model):
    from flax import nnx
    return nnx.state(model)


# ---------------------------------------------------------------------------------------- main

def machine_info() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "loadavg": load}  # 1/5/15-minute load averages (other processes share the CPUs)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--questions", type=int, default=4, help="questions (prompts) per step, Q")
    ap.add_argument("--group", type=int, default=8, help="rollouts per question, G")
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens (all prompts this long)")
    ap.add_argument("--new", type=int, default=64, help="new tokens per rollout, N (always all decoded)")
    ap.add_argument("--epochs", type=int, default=2, help="passes per rollout batch (Tunix num_iterations)")
    ap.add_argument("--minibatches", type=int, default=1)
    ap.add_argument("--kl", type=float, default=0.04)
    ap.add_argument("--clip", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps each (compile)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps each, alternating ours / Tunix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scan-unroll", type=int, default=1,
                    help="our layer scan's unroll (ModelConfig.scan_unroll; 0: all layers, as the lab presets)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    if a.questions % a.minibatches:
        ap.error("--minibatches must divide --questions")
    try:
        import tunix  # noqa: F401
    except ImportError:
        print("grpo_tunix: google-tunix is not importable here (see the module docstring); skipped")
        return {}
    from reference import random_params

    config = model_config(a.model, a.scan_unroll)
    params = random_params(config, seed=a.seed)
    rng = np.random.RandomState(a.seed + 1)
    prompts = [list(map(int, rng.randint(0, config.vocab_size, a.prompt))) for _ in range(a.questions)]
    tmp = tempfile.mkdtemp(prefix="grpo_tunix_")
    hf_dir = save_hf_checkpoint(Path(tmp) / "hf", config, params)

    load_before = machine_info()["loadavg"]
    t = time.perf_counter()
    ours = build_ours(a, config, params, prompts)
    theirs = build_tunix(a, config, hf_dir, prompts)
    setup = time.perf_counter() - t
    rows = {"ours": [], "tunix": []}
    warm = {"ours": [], "tunix": []}
    for i in range(a.warmup + a.repeats):
        for name, fn in (("ours", ours), ("tunix", theirs)) if i % 2 == 0 else (("tunix", theirs), ("ours", ours)):
            step, roll, reward = fn()
            (warm if i < a.warmup else rows)[name].append({"step_s": step, "rollout_s": roll, "reward": reward})
            print(f"{'warm-up' if i < a.warmup else 'timed'} {i} {name:5s} step {step:8.3f} s  rollout {roll:8.3f} s"
                  f"  reward {reward:.3f}", flush=True)

    tokens = a.questions * a.group * a.new
    result = dict(machine_info(), loadavg_before=load_before, model=a.model, params=config.num_params(), settings={
        k: getattr(a, k) for k in ("questions", "group", "prompt", "new", "epochs", "minibatches", "kl", "clip", "lr",
                                   "warmup", "repeats", "scan_unroll")}, rollout_tokens_per_step=tokens, setup_s=setup)
    for name in rows:
        steps = [r["step_s"] for r in rows[name]]
        rolls = [r["rollout_s"] for r in rows[name]]
        result[name] = {"step_s_median": statistics.median(steps), "rollout_s_median": statistics.median(rolls),
                        "rollout_tokens_per_s": tokens / statistics.median(rolls),
                        "rest_of_step_s_median": statistics.median(a - b for a, b in zip(steps, rolls)), "step_s": steps,
                        "rollout_s": rolls, "first_steps_s": [r["step_s"] for r in warm[name]],
                        "mean_reward": float(np.mean([r["reward"] for r in rows[name]]))}
    # per repeat (ours and Tunix ran back to back), then the median of those ratios
    result["ratio_step"] = statistics.median(t["step_s"] / o["step_s"] for o, t in zip(rows["ours"], rows["tunix"]))
    result["ratio_rollout_tokens_per_s"] = statistics.median(
        t["rollout_s"] / o["rollout_s"] for o, t in zip(rows["ours"], rows["tunix"]))
    # the rest of the step: rewards, advantages, old + reference log-probs and the updates
    result["ratio_rest_of_step"] = statistics.median(
        (t["step_s"] - t["rollout_s"]) / (o["step_s"] - o["rollout_s"]) for o, t in zip(rows["ours"], rows["tunix"]))
    result["compared"] = ("whole GRPO step (rollouts, rewards, advantages, old + reference log-probs, "
                          "epochs x minibatches updates) and its sampler call, both learners end to end")

    print(f"\nGRPO step, {a.model} Qwen2 ({config.num_params():,} params), Q={a.questions} G={a.group} "
          f"prompt={a.prompt} N={a.new} epochs={a.epochs} minibatches={a.minibatches} "
          f"scan_unroll={config.scan_unroll}, {jax.default_backend()}, "
          f"{a.repeats} alternating repeats, load average {load_before} before, {result['loadavg']} after")
    print(f"{'':8s}{'step s':>10s}{'rollout s':>11s}{'rollout tok/s':>15s}{'rest s':>10s}{'first step s':>14s}")
    for name in rows:
        r = result[name]
        print(f"{name:8s}{r['step_s_median']:10.3f}{r['rollout_s_median']:11.3f}{r['rollout_tokens_per_s']:15.0f}"
              f"{r['rest_of_step_s_median']:10.3f}{r['first_steps_s'][0] if r['first_steps_s'] else float('nan'):14.2f}")
    print(f"ours/Tunix speed: step {result['ratio_step']:.2f}x, rollout tokens/s "
          f"{result['ratio_rollout_tokens_per_s']:.2f}x, rest of the step (log-probs + updates) "
          f"{result['ratio_rest_of_step']:.2f}x (medians of per-repeat ratios)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
