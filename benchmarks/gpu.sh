#!/usr/bin/env bash
# Every GPU benchmark of the project, in one go, for one device session (about 3 minutes on an
# H200 once the machine is up): the sampler (issue 6) and the SFT step's MFU (issue 7), each
# side by side with transformers on the same card. Writes JSON and logs to OUTDIR.
#
#   bash benchmarks/gpu.sh OUTDIR
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv | tee "$out/nvidia-smi.txt"
"$python" -c "import jax, torch, transformers; print('jax', jax.__version__, jax.devices(), 'torch', torch.__version__, 'transformers', transformers.__version__)"
"$python" benchmarks/sample.py --preset qwen2-1.5b --repeats 2 --out "$out/sample_qwen2-1.5b_gpu.json" 2>&1 | tee "$out/sample.log"
"$python" benchmarks/train_step.py --preset qwen2-1.5b --peak --forms causal,packed \
  --out "$out/train_step_qwen2-1.5b_gpu.json" 2>&1 | tee "$out/train_step.log"
