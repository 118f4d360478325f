# Two entry points: `make run` (set up, then run the default demo) and
# `make test` (set up, then run the tests). Both create .venv/ when it is
# missing or older than pyproject.toml, and reuse it otherwise.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-study setup clean rtl-test

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mgd-emu demo

# Test processes (pytest-xdist): one per usable core, at most 4 (each compiles
# and holds its own kernels); each test file runs whole in one process, so a
# file's shared fixtures (a dask cluster, a long run) are built once.
# `make test TEST_WORKERS=0` runs the suite in pytest's own process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2); \
                  [ $$n -gt 4 ] && n=4; echo $$n)

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The reference RTL (rtl/) against golden and corner vectors under Icarus
# Verilog (Debian package iverilog); the tests skip, saying so, without it.
rtl-test: $(STAMP)
	$(PY) -m pytest -q -rs tests/test_rtl.py

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-study: $(STAMP)
	$(PY) benchmarks/study.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
