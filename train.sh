#!/usr/bin/env bash
# AtlasVLA training launcher, as the training-flow document describes it:
#   1. check Python (>= 3.8), torch and CUDA, the GPU count, required packages and the config;
#   2. launch torchrun with one process per GPU found (or NUM_GPUS), honouring CUDA_VISIBLE_DEVICES;
#   3. with no GPU, fall back to a single CPU process.
#
# Usage: ./train.sh [CONFIG] [extra atlas/train.py args, e.g. --resume auto --set key=value]
#   NUM_GPUS=4 ./train.sh atlas/configs/train_config.yaml
#   CUDA_VISIBLE_DEVICES=0,1 ./train.sh atlas/configs/8gpu.yaml
#   PYTHON=.venv/bin/python MASTER_PORT=29501 ./train.sh ...
set -euo pipefail
cd "$(dirname "$0")"

CONFIG="${1:-atlas/configs/train_config.yaml}"
[ $# -gt 0 ] && shift
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

say() { echo "[train.sh] $*"; }
die() { echo "[train.sh] ERROR: $*" >&2; exit 1; }

check_python() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "python not found ($PYTHON); set PYTHON=/path/to/python"
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "Python >= 3.8 required, found $("$PYTHON" --version 2>&1)"
  say "Python: $("$PYTHON" --version 2>&1)"
}

check_packages() {
  local missing
  missing=$("$PYTHON" - <<'PY'
import importlib.util
mods = ["torch", "yaml", "numpy", "safetensors", "transformers", "h5py", "tqdm"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PY
)
  [ -z "$missing" ] || die "missing packages: $missing (run: make install, or pip install -e .)"
  say "Packages: ok"
}

check_gpu() {
  local info
  info=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.device_count())')
  read -r TORCH_VERSION CUDA_OK GPU_COUNT <<<"$info"
  say "PyTorch: $TORCH_VERSION, CUDA available: $CUDA_OK, GPUs visible: $GPU_COUNT"
  [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && say "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
  if [ "$CUDA_OK" != "True" ]; then GPU_COUNT=0; fi
}

check_config() {
  [ -f "$CONFIG" ] || die "config not found: $CONFIG"
  "$PYTHON" atlas/train.py --config "$CONFIG" "$@" --dry-run >/dev/null \
    || die "config $CONFIG does not validate (see the message above)"
  say "Config: $CONFIG"
}

check_python
check_packages
check_gpu
check_config "$@"

NPROC="${NUM_GPUS:-$GPU_COUNT}"
if [ "$GPU_COUNT" -eq 0 ]; then
  say "No GPU: training in a single CPU process"
  exec "$PYTHON" atlas/train.py --config "$CONFIG" "$@"
fi
if [ "$NPROC" -gt "$GPU_COUNT" ]; then
  die "NUM_GPUS=$NPROC but only $GPU_COUNT GPU(s) are visible"
fi
say "Launching torchrun with $NPROC process(es)"
if [ -n "${MASTER_PORT:-}" ]; then RDZV=(--master_port="$MASTER_PORT"); else RDZV=(--standalone); fi
exec "$PYTHON" -m torch.distributed.run "${RDZV[@]}" --nproc_per_node="$NPROC" \
  atlas/train.py --config "$CONFIG" "$@"
