# infergate developer entry points. Everything installs into $(VENV) from the hashed lock files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REGISTRY ?= ./demo-registry
HOST ?= 127.0.0.1
PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: install install-dev serve test pytest lint fmt protos protos-check lock bench clean

$(VENV)/.runtime: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.lock pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

$(REGISTRY)/.built: | $(VENV)/.runtime
	$(VENV)/bin/infergate-registry demo $(REGISTRY)
	touch $@

serve: $(VENV)/.dev $(REGISTRY)/.built
	@$(PY) -m gateway.quickstart --target $(HOST):$(PORT)
	exec $(VENV)/bin/infergate-gateway --registry $(REGISTRY) --host $(HOST) --port $(PORT) --metrics-port $(METRICS_PORT)

test: install-dev lint protos-check pytest

pytest: install-dev
	$(PY) -m pytest -q

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Regenerates protos/*_pb2.py, *_pb2_grpc.py and *.pyi from protos/*.proto.
protos: install-dev
	$(PY) -m protos.generate

# Fails when the committed generated code differs from what `make protos` would write.
protos-check: install-dev
	$(PY) -m protos.generate --check

# Re-resolves the hashed lock files from pyproject.toml's ranges.
lock: install-dev
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--no-header -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra dev --universal --python-version 3.11 \
		--generate-hashes --no-header -c requirements.lock -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
