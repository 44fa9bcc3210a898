# `make run` and `make test` are all a fresh machine needs (Python >= 3.11, Node.js >= 20).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The first python3 >= 3.11 on PATH, newest name first.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: setup run test lint typecheck unit bench clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3 >= 3.11 found on PATH" >&2; exit 1; }
	@command -v node >/dev/null || echo "warning: node (Node.js >= 20) not found: JavaScript functions will answer 503" >&2
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/functions serve

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy .

unit: setup
	$(VENV)/bin/pytest -q

test: lint typecheck unit

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
