"""Full-scale configurations of the paper's experiments (PAPER.md, "Training setup of the full-scale
runs"), with the command of each and its memory arithmetic per device.

    python experiments/full_scale.py             # writes experiments/FULL_SCALE.md
    python experiments/full_scale.py --check     # also: every command parses into its config

Everything in the existing output file from the `KEEP` marker line on (hand-written sections with
measured numbers, e.g. the probe's memory at 32k tokens from benchmarks/probe_memory.py) is
carried over unchanged after the generated part.

Nothing here runs a model: it is the plan a Cloud TPU user starts from. The numbers come from
`metareason.parallel.memory` (params, gradients and optimizer exact; activations estimated from
the model's code and checked against XLA's `memory_analysis()` on scaled-down models in
tests/parallel/test_memory.py). Paths such as /data/... are where a user put the models and the
question files (the paper's format: question, answer, generations); /mnt/shared/ is storage every
host of the slice mounts (Filestore NFS, or a gcsfuse mount of a bucket): run directories are
local paths, and on several hosts they must be the same directory everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metareason.model import ModelConfig  # noqa: E402
from metareason.parallel.memory import GiB, sampling_memory, train_step_memory  # noqa: E402

# Architectures (the models' Hugging Face config.json), with the memory knobs full scale needs:
# float32 master weights (AdamW steps of lr 1e-5 round away in bf16 weights) with bf16 compute,
# whole-layer rematerialisation, chunked attention and loss. Probes keep the checkpoint's bf16.
FULL = dict(param_dtype="float32", compute_dtype="bfloat16", remat="full", attention_impl="chunked",
            attention_chunk=1024, loss_chunk=1024)
OVERRIDES = ",".join(f"{k}={v}" for k, v in FULL.items())
PROBE = dict(param_dtype="bfloat16", compute_dtype="bfloat16", attention_impl="chunked", attention_chunk=1024)
PROBE_OVERRIDES = ",".join(f"{k}={v}" for k, v in PROBE.items())
PROBE_BATCH = 16  # examples per probe pass (metareason.probe.inputs' batch size)
MODELS = {
    "Qwen2.5-7B": ModelConfig(family="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                              num_layers=28, num_heads=28, num_kv_heads=4, max_position_embeddings=131072,
                              rope_theta=1e6, rms_norm_eps=1e-6, **FULL),
    "QwQ-32B": ModelConfig(family="qwen2", vocab_size=152064, hidden_size=5120, intermediate_size=27648,
                           num_layers=64, num_heads=40, num_kv_heads=8, max_position_embeddings=131072,
                           rope_theta=1e6, rms_norm_eps=1e-5, **FULL),
    "Qwen3-32B": ModelConfig(family="qwen3", vocab_size=151936, hidden_size=5120, intermediate_size=25600,
                             num_layers=64, num_heads=64, num_kv_heads=8, head_dim=128,
                             max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6, **FULL),
}
# chips and HBM per chip (GiB) of the slices the configs target
HARDWARE = {"v5p-128": (64, 95), "v6e-256": (256, 32), "v5p-8": (4, 95)}
# from this line on the output file is not generated: main() keeps it as it is
KEEP = "<!-- not generated: experiments/full_scale.py keeps everything from this line on -->"

ORZ_QUESTIONS = 39_000  # ORZ math questions after the paper's filtering
SFT_BATCH, SFT_LR = 256, 1e-5
LONG_SEQ, SHORT_SEQ = 20480, 4096  # max response 18432 + the prompt, packed; short trajectories ~2k
GRPO_GROUP, GRPO_BATCH, GRPO_LR, GRPO_RESPONSE = 16, 1024, 1e-6, 16384


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    experiments: str
    model: str
    hardware: str
    mesh: str  # MeshConfig.parse syntax (DATAxFSDPxTENSOR)
    command: str
    kind: str  # "sft", "grpo" or "probe"
    batch: int  # rows per step (train) or per pass (sampling / probe)
    seq: int

    def mesh_sizes(self) -> dict[str, int]:
        from metareason.parallel import MeshConfig
        return MeshConfig.parse(self.mesh).shape(HARDWARE[self.hardware][0])


def _sft(name, exps, data, seq, hardware, mesh, extra=""):
    steps = -(-ORZ_QUESTIONS // SFT_BATCH)  # one epoch
    cmd = (f"metareason train --init /data/Qwen2.5-7B --data {data} --out /mnt/shared/runs/{name} "
           f"--mesh {mesh} --model-overrides {OVERRIDES} --steps {steps} --batch-size {SFT_BATCH} "
           f"--seq-len {seq} --optimizer.lr {SFT_LR} --optimizer.warmup-steps 5 --checkpoint-every 20 "
           f"--log-every 1 {extra}").strip()
    return Run(name, exps, "Qwen2.5-7B", hardware, mesh, cmd, "sft", SFT_BATCH, seq)


def _grpo(name, exps, init, hardware, mesh, extra=""):
    questions = GRPO_BATCH // GRPO_GROUP
    cmd = (f"metareason rl --init {init} --data /data/orz_questions.jsonl --think-prefix $'<think>\\n' "
           f"--out /mnt/shared/runs/{name} --mesh {mesh} --model-overrides {OVERRIDES} --steps 200 "
           f"--questions-per-step {questions} --group-size {GRPO_GROUP} --max-new-tokens {GRPO_RESPONSE} "
           f"--temperature 1.0 --epochs-per-batch 1 --minibatches 4 --optimizer.lr {GRPO_LR} "
           f"--loss.clip-low 0.2 --loss.clip-high 0.2 --loss.kl-coef 0.001 --loss.entropy-coef 0.001 "
           f"--checkpoint-every 10 {extra}").strip()
    # a minibatch of the update: the batch split 4 ways, prompt (~1k tokens) + response per row
    return Run(name, exps, "Qwen2.5-7B", hardware, mesh, cmd, "grpo", GRPO_BATCH // 4, GRPO_RESPONSE + 1024)


def runs() -> list[Run]:
    out = [
        _sft("e6-sft-long", "E6, E7 (cold start)", "/data/orz_long_r1_distill_14b.jsonl", LONG_SEQ, "v5p-128", "1x-1x1"),
        _sft("e6-sft-long-v6e", "E6 on v6e", "/data/orz_long_r1_distill_14b.jsonl", LONG_SEQ, "v6e-256", "1x-1x1"),
        _sft("e6-sft-short", "E6", "/data/orz_short_qwen25_math_72b.jsonl", SHORT_SEQ, "v5p-128", "1x-1x1"),
        _grpo("e6-zero-rl", "E6 (GRPO from the base)", "/data/Qwen2.5-7B", "v5p-128", "1x-1x1"),
        _grpo("e7-sft-then-grpo", "E7", "/mnt/shared/runs/e6-sft-long", "v5p-128", "1x-1x1"),
    ]
    for k in (1, 2, 4, 8, 16, 32):
        run = _sft(f"e10-k{k}", "E10", "/data/orz_long_32_generations.jsonl", LONG_SEQ, "v5p-128", "1x-1x1",
                   f"--k-trajectories {k} --slots-per-question 32")
        out.append(dataclasses.replace(run, command=run.command.replace(
            f"--steps {-(-ORZ_QUESTIONS // SFT_BATCH)}", f"--steps {-(-ORZ_QUESTIONS * 32 // SFT_BATCH)}")))
    for n in (1, 2, 4, 8, 16):
        out.append(_grpo(f"e11-n{n}", "E11", "/mnt/shared/runs/e6-sft-long", "v5p-128", "1x-1x1",
                         f"--update-n {n}"))
    for model, data in (("QwQ-32B", "/data/aime24_qwq_generations.jsonl"),
                        ("Qwen3-32B", "/data/aime24_qwen3_generations.jsonl")):
        cmd = (f"metareason probe --model /data/{model} --data {data} --out /mnt/shared/probes/{model} "
               f"--mesh 1x1x4 --model-overrides {PROBE_OVERRIDES} --think-prefix $'<think>\\n' --max-questions 30")
        out.append(Run(f"probe-{model}", "E2, E3, E4, E5, E12", model, "v5p-8", "1x1x4", cmd, "probe",
                       PROBE_BATCH, 32768))
    return out


def estimate(run: Run):
    config = MODELS[run.model]
    mesh = run.mesh_sizes()
    if run.kind == "sft":
        return train_step_memory(config, batch=run.batch, seq=run.seq, mesh=mesh)
    if run.kind == "grpo":
        train = train_step_memory(config, batch=run.batch, seq=run.seq, mesh=mesh)
        cache = sampling_memory(config, batch=GRPO_BATCH, max_len=run.seq, mesh=mesh)
        # the frozen reference policy is a second copy of the params; the sampler's cache is
        # freed before the update, so the larger of the two phases counts
        return dataclasses.replace(train, params=2 * train.params,
                                   activations=max(train.activations, cache.kv_cache))
    return sampling_memory(config.replace(**PROBE), batch=run.batch, max_len=run.seq, mesh=mesh)


def table(rows: list[Run]) -> str:
    lines = ["| run | experiments | model | slice | mesh (data x fsdp x tensor) | params | grads | optimizer | "
             "activations / cache | logits | total | HBM per chip | fits |", "|" + "---|" * 13]
    for r in rows:
        e = estimate(r)
        m = r.mesh_sizes()
        hbm = HARDWARE[r.hardware][1]
        acts = e.activations or e.kv_cache
        lines.append(f"| {r.name} | {r.experiments} | {r.model} | {r.hardware} | {m['data']} x {m['fsdp']} x "
                     f"{m['tensor']} | {e.params / GiB:.2f} | {e.gradients / GiB:.2f} | {e.optimizer / GiB:.2f} | "
                     f"{acts / GiB:.2f} | {e.logits / GiB:.2f} | **{e.total / GiB:.1f}** | {hbm} | "
                     f"{'yes' if e.total < 0.9 * hbm * GiB else 'NO'} |")
    return "\n".join(lines)


def check_commands(rows: list[Run]) -> None:
    """Every command parses into its config (the flags exist and take these values)."""
    from metareason.cli import parse_config

    for r in rows:
        # bash's $'...' quoting (the newline of '<think>\n') is not shlex's: decode it here
        argv = [a.encode().decode("unicode_escape") for a in shlex.split(r.command.replace("$'", "'"))]
        parse_config(argv[1], argv[2:])


def kept_sections(path: Path) -> str:
    """The text of `path` from its `KEEP` marker line to the end ("" when the file or the marker
    is missing)."""
    old = path.read_text() if path.exists() else ""
    return old[old.index(KEEP):] if KEEP in old else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "FULL_SCALE.md")
    ap.add_argument("--check", action="store_true", help="parse every command into its config")
    args = ap.parse_args()
    rows = runs()
    if args.check:
        check_commands(rows)
    text = ["# Full-scale configurations (generated by `python experiments/full_scale.py`)", "",
            "Per-device memory in GiB from `metareason.parallel.memory` (see its docstring; on scaled-down "
            "float32 models the activation estimate is within 0.75-1.15x of XLA's own figure, "
            "tests/parallel/test_memory.py).",
            "Training runs: " + ", ".join(f"{k} {v}" for k, v in FULL.items()) + "; probes: " +
            ", ".join(f"{k} {v}" for k, v in PROBE.items()) + f", {PROBE_BATCH} examples per pass "
            "(`--model-overrides`).",
            "GRPO counts the frozen reference as a second copy of the params, and the larger of the rollout "
            "KV cache and the update's activations.",
            "Not counted (a few GiB): the replicated embedding table the lookup reads, FSDP's all-gathered "
            "layer weights, the [B, S, S] boolean attention masks, and GRPO's logprob passes over the whole "
            "rollout batch (4x the update's rows; run them in pieces at this scale).",
            "Multi-host: these commands assume every host runs them with METAREASON_DISTRIBUTED=1 (README, "
            "Running at scale); the command-line GRPO and evaluation loops fetch arrays to the host and are "
            "so far tested on one process only.", "", table(rows), "", "## Commands", ""]
    for r in rows:
        text += [f"### {r.name} ({r.experiments})", "", "```bash", r.command, "```", ""]
    kept = kept_sections(args.out)
    args.out.write_text("\n".join(text) + ("\n" + kept if kept else ""))
    print(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
