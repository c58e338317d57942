# Every target sets up what it needs first; all of it is idempotent.
PY := .venv/bin/python

.PHONY: setup setup-test demo test lint bench fuzz soak clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	$(PY) -m gateway demo

test: setup-test
	.venv/bin/ruff check gateway tests bench
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup-test
	$(PY) -m bench.run $(BENCH_ARGS)

# Long runs, outside `make test`: 10,000 Hypothesis inputs per target; a 30-minute churn soak.
fuzz: setup-test
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

soak: setup-test
	SOAK_SECONDS=$${SOAK_SECONDS:-1800} $(PY) -m pytest -q -s -p no:cacheprovider tests/soak

lint: setup-test
	.venv/bin/ruff check gateway tests bench
	.venv/bin/ruff format --check gateway tests bench

clean:
	rm -rf .venv node_modules .pytest_cache
