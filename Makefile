# bastion — the two commands: `make run` serves the demo, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The per-request modules are compiled with mypyc at install time (see setup.py), so a
# change to them means a reinstall. BASTION_COMPILE=0 make ... installs pure Python. The
# builds for the tests and benchmarks ask for BASTION_COMPILE=1, so a build mypyc or the
# C compiler cannot make fails loudly there; `make run` takes pure Python in that case.
# (The stamp does not record the mode: after switching, `make clean` first.)
COMPILE_DEFAULT := 1
run: COMPILE_DEFAULT :=
COMPILED_SRC := $(wildcard src/bastion/protocol/*.py src/bastion/gateway/*.py src/bastion/edge/*.py \
	src/bastion/upstream/*.py src/bastion/observe/requestid.py)

# `make test` also runs the fast tests on a pure-Python install: a second venv with a
# regular (not editable) install built from a copy of the sources without the compiled
# files, so nothing of the compiled editable install in src/ can shadow it (and the pure
# build's clean-up of compiled files touches only the copy).
# It runs on Python 3.12 where one is found (pyenv's included), 3.11 running the compiled
# pass: 3.12 brings immortal objects (workers.immortalize) and the eager task factory.
ifndef PURE_PYTHON
PURE_PYTHON := $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; \
	do "$$p" -c '' 2>/dev/null && { echo "$$p"; break; }; done)
endif
ifeq ($(PURE_PYTHON),)
PURE_PYTHON := $(PYTHON)
endif
PURE       := .venv-pure-$(shell $(PURE_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PURE_PY    := $(PURE)/bin/python
PURE_STAMP := $(PURE)/.installed
PURE_COPY  := build/pure-src
ALL_SRC    := $(shell find src -name '*.py')
PURE_TESTS := tests/unit tests/e2e/test_installed_package.py tests/e2e/test_cli.py \
	tests/e2e/test_http1_e2e.py tests/e2e/test_slow_readers_e2e.py \
	tests/e2e/test_wsgi_validate.py tests/e2e/test_compress_headers.py tests/e2e/test_routes.py \
	tests/e2e/test_immortal_memory.py tests/e2e/test_tls_records.py

.PHONY: run test lint typecheck unit e2e bench bench-static system-deps clean check-pythons

$(STAMP): pyproject.toml setup.py $(COMPILED_SRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	BASTION_COMPILE=$${BASTION_COMPILE-$(COMPILE_DEFAULT)} $(PY) -m pip install -e '.[test]'
	touch $(STAMP)

$(PURE_STAMP): pyproject.toml setup.py README.md $(ALL_SRC)
	test -x $(PURE_PY) || $(PURE_PYTHON) -m venv $(PURE)
	rm -rf $(PURE_COPY) && mkdir -p $(PURE_COPY)
	tar -c --exclude='*.so' --exclude=__pycache__ --exclude='*.egg-info' \
		pyproject.toml setup.py README.md src | tar -x -C $(PURE_COPY)
	BASTION_COMPILE=0 $(PURE_PY) -m pip install -q '$(PURE_COPY)[test]'
	touch $(PURE_STAMP)

run: $(STAMP)
	@echo "bastion demo: http://127.0.0.1:8000"
	cd examples/demo && ../../$(VENV)/bin/bastion serve -c bastion.toml

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src
	$(PY) -m mypy

# the whole suite on the compiled install, then the fast tests on the pure one (where
# tests/unit/test_build.py checks that every module is really interpreted)
test: $(STAMP) $(PURE_STAMP) system-deps lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15
	BASTION_COMPILE=0 $(PURE_PY) -m pytest -q $(PURE_TESTS)

# bastion claims Python 3.11+: the compiled build on the other versions (not part of
# `make test`: a compiled build takes minutes). Each gets its own venv with a regular
# install built from a copy of the sources without 3.11's compiled files; the unit tests
# (tests/unit/test_build.py checks every module listed in setup.py is compiled and loads)
# and the fast end-to-end tests then run on it.
# PYTHONS="/path/to/python3.12 /path/to/python3.13" make check-pythons
PYTHONS ?= python3.12 python3.13
check-pythons: system-deps
	set -e; for py in $(PYTHONS); do \
		v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
		venv=.venv-$$v; copy=build/src-$$v; \
		test -x $$venv/bin/python || $$py -m venv $$venv; \
		rm -rf $$copy && mkdir -p $$copy; \
		tar -c --exclude='*.so' --exclude=__pycache__ --exclude='*.egg-info' \
			pyproject.toml setup.py README.md src | tar -x -C $$copy; \
		BASTION_COMPILE=1 $$venv/bin/python -m pip install -q "$$copy[test]"; \
		echo "== Python $$v, compiled"; \
		$$venv/bin/python -m pytest -q -n 2 -p no:cacheprovider $(PURE_TESTS); \
	done

bench: $(STAMP) system-deps
	$(PY) bench/run.py && $(PY) bench/report.py

bench-static: $(STAMP)
	bash scripts/system-deps.sh bench-static && $(PY) bench/static.py && $(PY) bench/report.py

clean:
	rm -rf $(VENV) .venv-pure* build dist src/*.egg-info
	find src -name '*.so' -delete
