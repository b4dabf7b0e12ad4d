# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean ui-check

install: $(STAMP)

# Rebuilt only when the pins change. PyRadiomics: its PyPI sdist 3.1.0 does not build on Python 3.11;
# pyradiomics-bhklab is a re-packaging of PyRadiomics 3.1 (same `radiomics` import, values identical to
# 3.0.1) that installs from a wheel, so no --no-build-isolation dance is needed.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[dev]' 2>&1 | grep -v '^WARNING: Location' ; test $${PIPESTATUS[0]} -eq 0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m cagerisk.demo

# PYTHONUTF8: some native libraries reset LC_CTYPE to "C" inside the test processes, after which
# Python's locale-default text I/O (subprocess text=True, Path.read_text) would decode as ASCII.
test: $(STAMP) lint
	PYTHONUTF8=1 $(BIN)/python -m pytest -n 2 --dist loadscope --timeout 900

# ruff (lint + format check) and import-linter's contracts (layers, stage independence, lean serving),
# all configured in pyproject.toml; `make test` runs this first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The demo's MLflow UI in headless Chromium: screenshots under docs/screenshots/ and checks (run `make demo` first).
ui-check: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/python benchmarks/ui_check.py

clean:
	rm -rf $(VENV)
