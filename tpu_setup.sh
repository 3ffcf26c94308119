#!/usr/bin/env bash
# Sets up a Cloud TPU VM for metareason from nothing: JAX for TPU, this package, a device
# check and the self-check. Idempotent: re-running skips what is already in place.
#
#   bash tpu_setup.sh            # do it
#   bash tpu_setup.sh --dry-run  # print each step without running it
#
# Environment: VENV (default ~/metareason-venv), PYTHON (default python3).
# Multi-host pods: run the same command on every host (gcloud ... ssh --worker=all).
# (A first version: meshes, multi-host launch and full-scale configs come with the scale-out work.)
set -euo pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "tpu_setup.sh: unknown argument '$arg' (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$HOME/metareason-venv}"
PYTHON="${PYTHON:-python3}"

step() {
  echo "+ $*"
  if [ "$DRY_RUN" -eq 0 ]; then
    "$@"
  fi
}

if [ -x "$VENV/bin/python" ]; then
  echo "= virtual environment $VENV exists"
else
  step "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

step "$PY" -m pip install -q --upgrade pip
# JAX for TPU (libtpu comes from PyPI as a dependency of the tpu extra); same range as pyproject.
step "$PY" -m pip install -q "jax[tpu]>=0.10,<0.12"
step "$PY" -m pip install -q -e "$REPO"
step "$PY" -c "import jax; d = jax.devices(); print(len(d), 'devices:', d[0].device_kind, '| processes:', jax.process_count()); assert d[0].platform == 'tpu', 'no TPU visible to JAX'"
step "$VENV/bin/metareason" selfcheck --out "$HOME/metareason-runs/selfcheck"
echo "metareason is set up in $VENV"
