# `make run` and `make test` work on a fresh clone: both build .venv first (only when it is missing
# or pyproject.toml changed).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(shell date +%Y%m%d-%H%M%S)

.PHONY: install run test clean

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

clean:
	rm -rf $(VENV) runs
