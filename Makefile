# The two quick-start commands: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_ARGS ?= --start-date 2024-01-01 --end-date 2024-03-31

.PHONY: setup jars services demo test test-fast bench sweep soak clean

JARS ?= $(or $(RAY_BACKFILL_JARS),$(HOME)/.cache/ray-backfill/jars)

setup: $(VENV)/.installed jars

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	@java -version 2>&1 | grep -q '"17' || (echo "error: OpenJDK 17 is required (java -version)" >&2; exit 1)
	@echo "setting up $(VENV): the Python dependencies (once)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@# setuptools warns that an editable install is one (BuildBackendWarning): known, not news
	@PYTHONWARNINGS=ignore $(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

jars: cluster/jvm-deps.txt cluster/fetch_jars.sh
	@cluster/fetch_jars.sh "$(JARS)"

# What the tests need beyond the venv and jars: PostgreSQL (the multi-host catalog) and a headless
# browser (Chromium, to open a run's report.html) on this machine.
services:
	@cluster/postgres.sh install
	@cluster/browser.sh install

demo: setup
	$(BIN)/ray-backfill run $(DEMO_ARGS)

test: setup services
	$(BIN)/pytest

# The unit tier: every test that starts no process (no JVM, no Ray, no PostgreSQL, no browser, no
# CLI) and is not slow; markers in pyproject.toml, tests/tiers.py. It needs the venv, not the jars.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -m "not process and not slow"

# The benchmarks (an idle machine, about an hour): per-chunk fixed cost, then RW-22 against the
# sequential baseline; results in benchmarks/results/.
bench: setup
	$(BIN)/python -m benchmarks.chunk_overhead
	$(BIN)/python -m benchmarks.chunk_cpu
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# How cost grows with the work (an idle machine, about an hour; SWEEP_ARGS=--quick about 25 min):
# results in benchmarks/results/sweep.*
sweep: setup
	$(BIN)/python -m benchmarks.sweep $(SWEEP_ARGS)

# Cost per chunk over a long daily backfill, first chunks against the last (an idle machine, 2 to 3
# hours; SOAK_ARGS=--quick about 15 min): results in benchmarks/results/soak/, exit 1 if a Ray mode grows
soak: setup
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) warehouse
