# AtlasVLA: the two commands of the README, plus helpers.
#   make demo   create .venv, install, train the embedded demo on synthetic LIBERO data, evaluate
#               it offline, then in closed loop on held-out layouts beside the expert and the
#               mean action
#   make test   create .venv if needed, install the dev extras (and the simulator), run ruff + pytest
# torch is installed only when not already importable, as $(TORCH_SPEC) (a CPU build on machines
# without accelerators); override with e.g. TORCH_SPEC='torch==2.6.0'.
# VENV may point outside the clone (CI caches one keyed by the dependency files): dependencies are
# installed once per pyproject hash, the project itself (editable, no deps) on every run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# --no-compile: byte-compiling every installed module (transformers alone has thousands) took
# more than half of the install; Python compiles the few modules it imports on first use.
PIP := $(PY) -m pip install --disable-pip-version-check -q --no-compile
TORCH_SPEC ?= torch==2.13.0
# Extras of `make test`: the simulator smoke rollout and the DeepSpeed ZeRO-2 tests run in CI.
TEST_EXTRAS ?= dev,sim,sim-assets,deepspeed
# LIBERO itself goes in without its declared dependencies (see pyproject's `sim` extra).
LIBERO_SPEC ?= hf-libero==0.1.4
# openpi's client (`atlas rollout --server`, the serving tests) pins numpy < 2, which it does not
# need: it goes in without dependencies too; websockets and msgpack are ours already.
OPENPI_CLIENT_SPEC ?= openpi-client==0.1.2
PYTEST_ARGS ?=
DEPS_HASH := $(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint format install install-dev sim clean-demo help

help:
	@echo "make demo   train + evaluate the embedded demo (CPU, a few minutes)"
	@echo "make test   ruff + pytest"
	@echo "make sim    install the LIBERO simulator for atlas rollout"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.deps-$(DEPS_HASH): $(VENV)/.torch
	$(PIP) -e .
	$(PIP) --no-deps "$(OPENPI_CLIENT_SPEC)"
	@touch $@

$(VENV)/.deps-test-$(DEPS_HASH): $(VENV)/.torch
	$(PIP) -e ".[$(TEST_EXTRAS)]"
	$(PIP) --no-deps "$(LIBERO_SPEC)" "$(OPENPI_CLIENT_SPEC)"
	@touch $@

install: $(VENV)/.deps-$(DEPS_HASH)
	@$(PIP) --no-deps -e .

install-dev: $(VENV)/.deps-test-$(DEPS_HASH)
	@$(PIP) --no-deps -e .

sim: install
	$(PIP) -e ".[sim,sim-assets]"
	$(PIP) --no-deps "$(LIBERO_SPEC)"

demo: install
	$(VENV)/bin/atlas train --no-progress
	$(VENV)/bin/atlas eval --checkpoint runs/debug/final
	$(VENV)/bin/atlas rollout --suite synthetic --checkpoint runs/debug/final --trials 10 \
		--compare expert,mean-action --threads 1 --no-progress

test: install-dev
	$(VENV)/bin/ruff check atlas tests
	$(VENV)/bin/ruff format --check atlas tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check atlas tests

format: install-dev
	$(VENV)/bin/ruff format atlas tests
	$(VENV)/bin/ruff check --fix atlas tests

clean-demo:
	rm -rf runs/debug data/synthetic
