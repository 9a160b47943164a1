# AtlasVLA: the two commands of the README, plus helpers.
#   make demo   create .venv, install, train the embedded demo on synthetic LIBERO data, evaluate
#   make test   create .venv if needed, install the dev extras, run ruff and pytest
# torch is installed only when not already importable, as $(TORCH_SPEC) (a CPU build on machines
# without accelerators); override with e.g. TORCH_SPEC='torch==2.6.0'.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Extras installed by `make test`: the simulator smoke rollout runs in CI.
TEST_EXTRAS ?= dev,sim,sim-assets
PYTEST_ARGS ?=

.PHONY: demo test lint format install install-dev clean-demo help

help:
	@echo "make demo   train + evaluate the embedded demo (CPU, a few minutes)"
	@echo "make test   ruff + pytest"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs are stamped with the hash of pyproject.toml so a dependency change reinstalls.
DEPS_HASH := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)

$(VENV)/.torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --disable-pip-version-check "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed-$(DEPS_HASH): $(VENV)/.torch
	$(PY) -m pip install --disable-pip-version-check -q -e .
	@touch $@

$(VENV)/.installed-test-$(DEPS_HASH): $(VENV)/.torch
	$(PY) -m pip install --disable-pip-version-check -q -e ".[$(TEST_EXTRAS)]"
	@touch $@

install: $(VENV)/.installed-$(DEPS_HASH)
install-dev: $(VENV)/.installed-test-$(DEPS_HASH)

demo: install
	$(VENV)/bin/atlas train --no-progress
	$(VENV)/bin/atlas eval --checkpoint runs/debug/final

test: install-dev
	$(VENV)/bin/ruff check atlas tests
	$(VENV)/bin/ruff format --check atlas tests
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check atlas tests

format: install-dev
	$(VENV)/bin/ruff format atlas tests
	$(VENV)/bin/ruff check --fix atlas tests

clean-demo:
	rm -rf runs/debug data/synthetic
