#!/usr/bin/env bash
# Every GPU benchmark of the project, in one go, for one device session (within 8 minutes on an
# H200 once the machine is up; each row runs under its own time limit and none starts past the
# budget), each side by side with transformers on the same card, then ONE summary table
# (benchmarks/summary.py over the JSONs). Writes JSON, logs and summary.txt to OUTDIR.
#
#   bash benchmarks/gpu.sh OUTDIR            # PYTHON=... to pick the interpreter, BUDGET_S=480
#
# Rows (issue 19, "It must show"), most wanted first:
#   sample_b32      decoding at batch 32 (Qwen2-1.5B shape, bf16, prompt 128 + 256 new) vs transformers,
#                   and as a fraction of the memory-bandwidth bound (sample.py: batch x HBM bytes/s /
#                   (param bytes + mean KV-cache bytes read per step); H200 4.8e12 B/s, H100 3.35e12)
#   train_step      the SFT step's MFU (causal and packed) vs transformers + torch AdamW, --peak: an
#                   8192^3 matmul's rate as the practical peak
#   probe           the one-pass probe (question 128, trajectory 4096, 64 cuts) vs transformers per
#                   prefix and vs one plain forward over the same tokens (target <= 1.5x one forward)
#   sample_b1, sample_b256   decoding at batch 1 and 256, same columns as sample_b32
#   forward         one forward pass, attention xla and cudnn, vs transformers
#   grpo_tunix      the GRPO step vs Tunix's GRPO learner: only where google-tunix imports (the GPU
#                   image has none: skipped with a line; on the CPU it runs from .ci-tunix)
set -uo pipefail
# shellcheck source=benchmarks/rows.sh
source "$(dirname "$0")/rows.sh"  # OUTDIR, cd to the root, $python, the budget, row()

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv | tee "$out/nvidia-smi.txt"
"$python" -c "import jax, torch, transformers; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, 'transformers', transformers.__version__)"
# the probe's attention: "auto" (the model's per-backend default) once the kernels work lands, else cudnn
impl=$("$python" -c "from metareason.model.config import ATTENTION_IMPLS as A; print('auto' if 'auto' in A else 'cudnn')")

row sample_b32 100 "$python" benchmarks/sample.py --preset qwen2-1.5b --repeats 2 --out "$out/sample_qwen2-1.5b_gpu.json"
row train_step 150 "$python" benchmarks/train_step.py --preset qwen2-1.5b --peak --forms causal,packed \
  --out "$out/train_step_qwen2-1.5b_gpu.json"
row probe 120 "$python" benchmarks/probe.py --preset qwen2-1.5b --question 128 --trajectory 4096 --cuts 64 \
  --impl "$impl" --iters 3 --out "$out/probe_qwen2-1.5b_gpu.json"
row sample_b1 75 "$python" benchmarks/sample.py --preset qwen2-1.5b --batch 1 --repeats 1 \
  --out "$out/sample_qwen2-1.5b_b1_gpu.json"
row sample_b256 110 "$python" benchmarks/sample.py --preset qwen2-1.5b --batch 256 --repeats 1 \
  --out "$out/sample_qwen2-1.5b_b256_gpu.json"
row forward 60 "$python" benchmarks/forward.py --preset qwen2-1.5b --impls xla,cudnn --out "$out/forward_qwen2-1.5b_gpu.json"
if "$python" -c "import tunix" >/dev/null 2>&1; then
  row grpo_tunix 120 "$python" benchmarks/grpo_tunix.py --model small --warmup 1 --repeats 3 \
    --out "$out/grpo_tunix_small_gpu.json"
else
  echo "== grpo_tunix: skipped (google-tunix is not importable by $python; on the CPU: .ci-tunix/bin/python benchmarks/grpo_tunix.py)" \
    | tee -a "$out/skipped.txt"
fi

echo "== summary ($((SECONDS - start)) s)"
"$python" benchmarks/summary.py "$out" | tee "$out/summary.txt"
