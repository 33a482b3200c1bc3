# The two commands: `make demo` and `make test`. Everything else is a step they share.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_HOME := .rapport-test

.PHONY: setup demo test unit integration lint bench load clean

setup: $(STAMP)

# The replay's native decoder (native/, Rust) is built by cargo through maturin; rustup puts
# cargo in ~/.cargo/bin, which a non-login shell may not have on its PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)
NATIVE := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)

$(STAMP): pyproject.toml scripts/ensure-system-deps.sh $(NATIVE)
	@scripts/ensure-system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q ./native
	@touch $@

demo: setup
	$(BIN)/rapport demo

# Starts one real Kafka broker on a free loopback port, runs every test against it, and stops
# it by pid whatever happened; pytest's exit status is the target's.
test: setup
	@set -u; \
	port=$$($(BIN)/python -c 'from rapport.process import free_port; print(free_port())'); \
	cport=$$($(BIN)/python -c 'from rapport.process import free_port; print(free_port())'); \
	export RAPPORT_HOME=$(TEST_HOME) RAPPORT_KAFKA_BOOTSTRAP=127.0.0.1:$$port RAPPORT_KAFKA_CONTROLLER_PORT=$$cport; \
	$(BIN)/rapport kafka down >/dev/null; \
	$(BIN)/rapport kafka up || exit 1; \
	trap '$(BIN)/rapport kafka down' EXIT; \
	env -u RAPPORT_HOME -u RAPPORT_KAFKA_BOOTSTRAP -u RAPPORT_KAFKA_CONTROLLER_PORT \
	    RAPPORT_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$$port $(BIN)/pytest $(PYTEST_ARGS)

unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# `make bench` runs the load bench for one minute; `make load` is its 10-minute run (docs/benchmarks.md).
BENCH_LOAD_ARGS ?= --seconds 60
LOAD_ARGS ?= --rate 1000 --seconds 600 --live-states-mb 64 --json /tmp/rapport-bench-load.json

bench: setup
	@for b in bench/bench_*.py; do \
	    args=; if [ $$b = bench/bench_load.py ]; then args="$(BENCH_LOAD_ARGS)"; fi; \
	    echo "== $$b $$args"; $(BIN)/python $$b $$args || exit 1; done

load: setup
	$(BIN)/python bench/bench_load.py $(LOAD_ARGS)

# Fault injection against real processes (chaos/): its own broker on free loopback ports,
# stopped by pid at the end. Not part of `make test`. CHAOS_ARGS: scenario names, --events N.
chaos: setup
	$(BIN)/python -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(TEST_HOME) .pytest_cache .mypy_cache .ruff_cache
