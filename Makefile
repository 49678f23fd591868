# Every developer task is a make target: `make help` lists them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install serve test lint format bench bench-peers browser soak

help:  ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## Create .venv and install Sluice with its dev tools

serve: $(STAMP)  ## Start the gateway (config: SLUICE_CONFIG or the environment)
	$(BIN)/sluice serve

lint: $(STAMP)  ## ruff format check, ruff lint, mypy
	$(BIN)/ruff format --check sluice tests bench
	$(BIN)/ruff check sluice tests bench
	$(BIN)/mypy

format: $(STAMP)  ## Apply ruff's formatting and fixes
	$(BIN)/ruff format sluice tests bench
	$(BIN)/ruff check --fix sluice tests bench

browser:  ## Install Debian's Chromium for the dashboard's browser tests (if missing)
	@test -x /usr/bin/chromium || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

test: lint browser  ## Lint, then the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP)  ## Benchmark Sluice against a direct call to the upstream
	$(BIN)/python -m bench.run

bench-peers: $(STAMP)  ## Also install and measure LiteLLM and Portkey (ignored folders)
	$(BIN)/python -m bench.run --peers

soak: $(STAMP)  ## 3-minute soak: 3 gateways + nginx + PostgreSQL + Redis, restarts mid-run
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
