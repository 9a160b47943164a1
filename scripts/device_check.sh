#!/usr/bin/env bash
# Every GPU number of AtlasVLA in one command (docs/BENCHMARKS.md, "GPU check"):
#   scripts/device_check.sh OUTDIR [--smoke] [--only PART,...] [--budget-s S]
# writes OUTDIR/device_check.json, .md and .log (python -m atlas.bench.device --help). Wheels
# gathered by scripts/device_wheels.sh in .whl/ are installed first into a private folder, for a
# machine without network whose image lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ $1 == -* ]]; then
  echo "usage: scripts/device_check.sh OUTDIR [--smoke] [--only PART,...]" >&2
  exit 2
fi
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  site=${TMPDIR:-/tmp}/atlas-device-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
# The checkout's atlas first (the device runs the tree it was sent, installed or not).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" -m atlas.bench.device "$@"
