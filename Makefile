# Two commands on a fresh machine: `make demo` (the whole pipeline on a synthetic data set) and
# `make test`. Each one sets up .venv/ first (idempotent; a no-op the second time).
PY := .venv/bin/python

.PHONY: setup demo test lint bench clean-demo
setup:
	@bash scripts/setup_venv.sh

demo: setup
	$(PY) -m fatlib demo --out demo

test: setup
	$(PY) -m ruff check fatlib tests benchmarks
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check fatlib tests benchmarks

bench: setup
	$(PY) benchmarks/run_all.py $(ARGS)

clean-demo:
	rm -rf demo
