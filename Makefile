# Every target sets up what it needs first; all of it is idempotent.
PY := .venv/bin/python

.PHONY: setup setup-test demo test lint bench fuzz clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	$(PY) -m gateway demo

test: setup-test
	.venv/bin/ruff check gateway tests
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup-test
	.venv/bin/ruff check gateway tests
	.venv/bin/ruff format --check gateway tests

clean:
	rm -rf .venv node_modules .pytest_cache
