# Every developer task is a make target: `make help` lists them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Claude Code for tests/test_claude_code.py, pinned, in an ignored folder (never committed)
CLAUDE_CODE_VERSION := 2.1.197
CLAUDE_CODE := bench/peers/claude-code
CLAUDE_CODE_STAMP := $(CLAUDE_CODE)/.installed-$(CLAUDE_CODE_VERSION)

.DEFAULT_GOAL := help
.PHONY: help install serve test lint format bench bench-peers system-deps soak claude-code

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

system-deps:  ## Install Debian's chromium (browser tests), nginx, wrk (deploy check, bench), npm if missing
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(CLAUDE_CODE_STAMP): | system-deps
	@if command -v npm >/dev/null; then \
		mkdir -p $(CLAUDE_CODE) && \
		npm install --prefix $(CLAUDE_CODE) --no-audit --no-fund --loglevel=error \
			@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) && touch $@; \
	else \
		echo "npm not found: Claude Code not installed (its test skips; under CI=true it fails)"; \
	fi

claude-code: $(CLAUDE_CODE_STAMP)  ## Install the pinned Claude Code CLI into bench/peers/ (≈ 80 MB, seconds)

test: lint system-deps claude-code  ## Lint, then the whole test suite
	$(BIN)/python -m pytest -q

bench: $(STAMP) system-deps  ## Benchmark Sluice against the upstream, nginx, and its own variants (≈ 5 min)
	$(BIN)/python -m bench.run --variants

bench-peers: $(STAMP) system-deps  ## Also install and measure LiteLLM and Portkey (ignored folders)
	$(BIN)/python -m bench.run --peers

soak: $(STAMP) system-deps  ## 3-minute soak: 3 gateways + nginx + PostgreSQL + Redis, restarts mid-run
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
