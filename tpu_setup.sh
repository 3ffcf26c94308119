#!/usr/bin/env bash
# Sets up a Cloud TPU VM for metareason from nothing: a virtual environment, JAX for TPU, this
# package, a check of the devices (and, on a pod slice, of every host), and the self-check.
# Idempotent: re-running skips what is already in place.
#
#   bash tpu_setup.sh                # do it
#   bash tpu_setup.sh --dry-run      # print each step without running anything
#   bash tpu_setup.sh --skip-check   # install only (no device check, no self-check)
#   bash tpu_setup.sh --pod          # on every host of a multi-host slice (see below)
#
# Environment: VENV (default ~/metareason-venv), PYTHON (default python3),
# JAX_SPEC (default "jax[tpu]>=0.10,<0.12", the range pyproject.toml allows).
# Pod slices (several hosts): clone this repository to the same path on every host, then run the
# same command with --pod on every host at once, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command "bash ~/metareason/tpu_setup.sh --pod"
# The device check then starts jax.distributed on each host and checks that a sum over every
# device of the slice is right; the single-process self-check is skipped. See README.md,
# "Running at scale".
set -euo pipefail

DRY_RUN=0
CHECK=1
POD=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --skip-check) CHECK=0 ;;
    --pod) POD=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "tpu_setup.sh: unknown argument '$arg' (use --dry-run, --skip-check, --pod or --help)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$HOME/metareason-venv}"
PYTHON="${PYTHON:-python3}"
JAX_SPEC="${JAX_SPEC:-jax[tpu]>=0.10,<0.12}"
PY="$VENV/bin/python"

step() {
  echo "+ $*"
  if [ "$DRY_RUN" -eq 0 ]; then
    "$@"
  fi
}

# 1. the virtual environment
if [ -x "$PY" ]; then
  echo "= virtual environment $VENV exists"
else
  step "$PYTHON" -m venv "$VENV"
fi

# 2. JAX for TPU (libtpu comes from PyPI as a dependency of the tpu extra)
if [ "$DRY_RUN" -eq 0 ] && "$PY" -c "import jax, libtpu" 2>/dev/null; then
  echo "= JAX for TPU is installed ($("$PY" -c 'import jax; print(jax.__version__)'))"
else
  step "$PY" -m pip install -q --upgrade pip
  step "$PY" -m pip install -q "$JAX_SPEC"
fi

# 3. this package (editable, so a git pull needs no reinstall)
if [ "$DRY_RUN" -eq 0 ] && "$PY" -c "import metareason" 2>/dev/null; then
  echo "= metareason is installed"
else
  step "$PY" -m pip install -q -e "$REPO"
fi

if [ "$CHECK" -eq 0 ]; then
  echo "metareason is installed in $VENV (checks skipped)"
  exit 0
fi

# 4. the devices: TPUs, and a sum over every device (of every host, with --pod) is right
if [ "$POD" -eq 1 ]; then
  step "$PY" -m metareason.parallel.check --expect-platform tpu --distributed
else
  step "$PY" -m metareason.parallel.check --expect-platform tpu
  # 5. the self-check (a single-process smoke test of the whole library)
  step "$VENV/bin/metareason" selfcheck --out "$HOME/metareason-runs/selfcheck"
fi
echo "metareason is set up in $VENV"
