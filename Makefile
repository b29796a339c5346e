# tvr-convbench: every target that runs Python first makes sure .venv matches pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/tvr-convbench
SRC := core methods datasets bench tvr_convbench tests examples
STAMP := $(VENV)/.installed
SWEEP ?= default
JOBS ?= auto
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup sweep report bench test test-fast lint format clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  Variables: SWEEP=<name or path> (default: $(SWEEP)), JOBS=<n or auto> (default: $(JOBS)), ARGS='<extra CLI flags>'"

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,wandb]'
	@touch $(STAMP)

setup: $(STAMP) ## Create/refresh .venv from pyproject.toml (no-op when current)

sweep: setup ## Run a convergence sweep (SWEEP=default) and write reports/<sweep>/report.md
	$(CLI) sweep $(SWEEP) --jobs $(JOBS) $(ARGS)

report: setup ## Rebuild reports/<sweep>/ from the run log alone (SWEEP=default)
	$(CLI) report $(SWEEP) $(ARGS)

bench: setup ## Performance benchmark: writes reports/bench/bench.{json,md}
	$(CLI) perf $(ARGS)

test: setup ## The whole test suite (lint included)
	$(VENV)/bin/ruff check $(SRC)
	$(PY) -m pytest -q $(ARGS)

test-fast: setup ## The test suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: setup ## ruff lint + format check
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

format: setup ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix $(SRC)
	$(VENV)/bin/ruff format $(SRC)

clean: ## Remove caches (keeps runs/ and reports/)
	rm -rf .cache .pytest_cache .ruff_cache
