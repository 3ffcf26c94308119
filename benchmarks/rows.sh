# Shared by gpu.sh and tpu.sh (sourced after `set -uo pipefail`): OUTDIR from $1 (made absolute),
# the repository root as the working folder, $python, the time budget, and row().
out=${1:?usage: bash benchmarks/gpu.sh|tpu.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
budget=${BUDGET_S:-480}
start=$SECONDS

# row NAME LIMIT_S CMD...: one benchmark under `timeout` (cut to what is left of the budget),
# its output teed to OUTDIR/NAME.log; a row that fails or times out does not stop the others.
row() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - start)))
  if ((left < 30)); then
    echo "== $name: skipped (the ${budget} s budget is spent)" | tee -a "$out/skipped.txt"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s, $((SECONDS - start)) s into the run)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
