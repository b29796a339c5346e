# tvr-convbench: every target that runs Python first makes sure .venv matches pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SWEEP ?= default
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup sweep report bench test test-fast lint format clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  Variables: SWEEP=<name or path> (default: $(SWEEP)), ARGS='<extra CLI flags>'"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create/refresh .venv from pyproject.toml (no-op when current)

sweep: setup ## Run a convergence sweep (SWEEP=default) and write reports/<sweep>/report.md
	$(PY) -m bench sweep $(SWEEP) $(ARGS)

report: setup ## Rebuild reports/<sweep>/ from the run log alone (SWEEP=default)
	$(PY) -m bench report $(SWEEP) $(ARGS)

bench: setup ## Performance benchmark: writes reports/bench/bench.{json,md}
	$(PY) -m bench perf $(ARGS)

test: setup ## The whole test suite (lint included)
	$(VENV)/bin/ruff check bench methods datasets tests
	$(PY) -m pytest -q $(ARGS)

test-fast: setup ## The test suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: setup ## ruff lint + format check
	$(VENV)/bin/ruff check bench methods datasets tests
	$(VENV)/bin/ruff format --check bench methods datasets tests

format: setup ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix bench methods datasets tests
	$(VENV)/bin/ruff format bench methods datasets tests

clean: ## Remove caches (keeps runs/ and reports/)
	rm -rf .cache .pytest_cache .ruff_cache
