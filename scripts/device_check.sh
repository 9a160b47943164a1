#!/usr/bin/env bash
# Every GPU number of AtlasVLA in one command (docs/BENCHMARKS.md, "GPU check"):
#   scripts/device_check.sh OUTDIR [--smoke] [--only PART,...] [--budget-s S]
# writes OUTDIR/device_check.json, .md and .log (python -m atlas.bench.device --help). Wheels
# gathered by scripts/device_wheels.sh in .whl/ are installed first into a private folder, for a
# machine without network whose image lacks them (DeepSpeed and its dependencies).
set -euo pipefail
if [ $# -lt 1 ] || [[ $1 == -* ]]; then
  echo "usage: scripts/device_check.sh OUTDIR [--smoke] [--only PART,...]" >&2
  exit 2
fi
out=$(realpath -m -- "$1")  # relative to the caller, before moving to the checkout
shift
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Only where they are missing (a machine with network has its own), and never fatal: a part
# that needs a package that is still missing reports itself as skipped.
if compgen -G ".whl/*.whl" > /dev/null && ! "$PY" -c "import deepspeed" 2> /dev/null; then
  site=${TMPDIR:-/tmp}/atlas-device-site
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl; then
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "device_check: the wheels in .whl/ did not install (see above); going on without" >&2
  fi
fi
# The checkout's atlas first (the device runs the tree it was sent, installed or not).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" -m atlas.bench.device "$out" "$@"
