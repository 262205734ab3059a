# Two commands on a fresh machine: `make demo` (the whole pipeline on a synthetic data set) and
# `make test`. Each one sets up .venv/ first (idempotent; a no-op the second time).
PY := .venv/bin/python

.PHONY: setup demo test lint bench clean-demo
setup:
	@bash scripts/setup_venv.sh

demo: setup
	$(PY) -m fatlib demo --out demo

# Two pytest workers (CI has 2 cores; TEST_JOBS=0 runs in one process). Each test file runs whole on one worker,
# so a module's shared set-up (a trained run, a built dataset) is made once; the slowest files start first
# (tests/conftest.py), in that order (--no-loadscope-reorder).
# One torch/OpenMP thread per process while two workers (and the commands they start) share the cores: 3 min 48 s
# instead of 5 min 0 s on 2 cores, every test the same. A thread count already in the environment stands.
TEST_JOBS ?= 2
test: export OMP_NUM_THREADS ?= 1
test: export MKL_NUM_THREADS ?= 1
test: setup
	$(PY) -m ruff check fatlib tests benchmarks
	$(PY) -m pytest -q tests -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

lint: setup
	$(PY) -m ruff check fatlib tests benchmarks

bench: setup
	$(PY) benchmarks/run_all.py $(ARGS)

clean-demo:
	rm -rf demo
