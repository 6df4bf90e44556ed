# bastion — the two commands: `make run` serves the demo, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The per-request modules are compiled with mypyc at install time (see setup.py), so a
# change to them means a reinstall. BASTION_COMPILE=0 make ... installs pure Python.
COMPILED_SRC := $(wildcard src/bastion/protocol/*.py src/bastion/gateway/*.py)

.PHONY: run test lint typecheck unit e2e bench bench-static system-deps clean

$(STAMP): pyproject.toml setup.py $(COMPILED_SRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@echo "bastion demo: http://127.0.0.1:8000"
	cd examples/demo && ../../$(VENV)/bin/bastion serve -c bastion.toml

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src
	$(PY) -m mypy

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

bench: $(STAMP) system-deps
	$(PY) bench/run.py && $(PY) bench/report.py

bench-static: $(STAMP)
	bash scripts/system-deps.sh bench-static && $(PY) bench/static.py && $(PY) bench/report.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
	find src -name '*.so' -delete
