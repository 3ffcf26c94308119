#!/usr/bin/env bash
# The twin of benchmarks/gpu.sh for a Cloud TPU VM (one host; jax[tpu] installed): the same rows,
# each under its own time limit within one budget (8 minutes), JSON and logs to OUTDIR, then ONE
# summary table (benchmarks/summary.py, with the chip's HBM bandwidth so decoding rows get their
# fraction of the memory-bandwidth bound; sample.py also gets it as --bandwidth).
#
#   bash benchmarks/tpu.sh OUTDIR       # PYTHON=..., BUDGET_S=480, HBM_BW=bytes/s, PEAK_TFLOPS=...
#
# Not yet run on a TPU (no TPU has been lent); the commands are ready.
#
# The peer: transformers (torch) has no TPU backend here, so on a TPU VM it would run on the host
# CPU, which is not a peer for a TPU and would eat the budget: every row runs with --no-reference.
#
# attention_impl: which kernel the probe and the SFT step use on a TPU is TBD by the kernels work
# (issue 19 item 1: splash attention for the probe's block mask and packing's segment ids). The
# script picks "auto" (the model's per-backend default) if that name exists, else "splash" if it
# exists, else "xla", and records the choice in OUTDIR/attention_impl.txt.
set -uo pipefail
# shellcheck source=benchmarks/rows.sh
source "$(dirname "$0")/rows.sh"  # OUTDIR, cd to the root, $python, the budget, row()

"$python" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$out/devices.txt"
kind=$("$python" -c "import jax; print(jax.devices()[0].device_kind)")
# HBM bandwidth (bytes/s) and dense bf16 peak (TFLOP/s) per chip, from the Cloud TPU datasheets
case "$kind" in
  *v5*lite* | *v5e*) bw=8.19e11 peak=197 ;;
  *v5p* | *v5*) bw=2.765e12 peak=459 ;;
  *v6*) bw=1.64e12 peak=918 ;;
  *v4*) bw=1.2e12 peak=275 ;;
  *) bw=0 peak=0 ;;
esac
bw=${HBM_BW:-$bw}
peak=${PEAK_TFLOPS:-$peak}
echo "device kind: $kind, HBM bandwidth $bw B/s, bf16 peak $peak TFLOP/s" | tee -a "$out/devices.txt"
impl=$("$python" -c "
from metareason.model.config import ATTENTION_IMPLS as A
print(next(i for i in ('auto', 'splash', 'xla') if i in A))")
echo "$impl" >"$out/attention_impl.txt"
peak_flag=()
[[ $peak != 0 ]] && peak_flag=(--peak-tflops "$peak")
bw_flag=()
[[ $bw != 0 ]] && bw_flag=(--bandwidth "$bw")

sample() {  # sample NAME BATCH LIMIT
  row "$1" "$3" "$python" benchmarks/sample.py --preset qwen2-1.5b --batch "$2" --repeats 1 --no-reference \
    "${bw_flag[@]}" \
    --out "$out/sample_qwen2-1.5b_b$2_tpu.json"
}

sample sample_b32 32 150
row train_step 150 "$python" benchmarks/train_step.py --preset qwen2-1.5b --peak --forms causal,packed \
  "${peak_flag[@]}" --overrides "attention_impl=$impl" --no-reference --out "$out/train_step_qwen2-1.5b_tpu.json"
row probe 120 "$python" benchmarks/probe.py --preset qwen2-1.5b --question 128 --trajectory 4096 --cuts 64 \
  --impl "$impl" --iters 3 --no-reference --out "$out/probe_qwen2-1.5b_tpu.json"
sample sample_b1 1 90
sample sample_b256 256 150
impls=xla
[[ $impl != xla ]] && impls="xla,$impl"
row forward 60 "$python" benchmarks/forward.py --preset qwen2-1.5b --impls "$impls" --no-reference \
  --out "$out/forward_qwen2-1.5b_tpu.json"
if "$python" -c "import tunix" >/dev/null 2>&1; then
  row grpo_tunix 120 "$python" benchmarks/grpo_tunix.py --model small --warmup 1 --repeats 3 \
    --out "$out/grpo_tunix_small_tpu.json"
else
  echo "== grpo_tunix: skipped (google-tunix is not importable by $python)" | tee -a "$out/skipped.txt"
fi

echo "== summary ($((SECONDS - start)) s)"
"$python" benchmarks/summary.py "${bw_flag[@]}" "$out" | tee "$out/summary.txt"
