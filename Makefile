# `make run` and `make test` work on a fresh clone: both build .venv first (only when it is missing
# or pyproject.toml changed).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(shell date +%Y%m%d-%H%M%S)

PARITY := .venv-parity

.PHONY: install run test lint docs parity clean

install: $(VENV)/.installed

# torch first and pinned: a loose requirement elsewhere must never pull the CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: install
	$(BIN)/seqtrain fit recipe=char_lm run_dir=runs/char_lm/$(STAMP)
	$(BIN)/seqtrain sample runs/char_lm/$(STAMP) --prompt "def " --length 400 --temperature 0.8 --top-k 40 --seed 1

test: install
	$(BIN)/python -m pytest

# ruff (lint and format) over the tree, mypy over the trainer, configs and the recipe contract (pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The option reference is generated from the config dataclasses; tests/test_docs.py checks the committed copy.
docs: install
	$(BIN)/python -m seqtrain.reference > docs/options.md

# The low end of the torch range with live torchaudio: its Linux wheels are CUDA builds of several GB
# (they run on the CPU), so this venv is built only when missing and CI never runs it. Prints the
# front-end comparison as one JSON line, then runs the whole test suite there (torchaudio's live tests included).
parity: $(PARITY)/.installed
	$(PARITY)/bin/python bench/torchaudio_parity.py
	$(PARITY)/bin/python -m pytest

$(PARITY)/.installed: pyproject.toml
	test -x $(PARITY)/bin/python || $(PYTHON) -m venv $(PARITY)
	$(PARITY)/bin/pip install -q torch==2.11.0 torchaudio==2.11.0
	$(PARITY)/bin/pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) $(PARITY) runs
