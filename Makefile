# One command per everyday task: `make help` lists them. CI runs .ci/run (set-up, lint, types, the lock check, all
# tests, the reproducibility check) from a fresh .venv; these run in the .venv that `make setup` makes.
BIN := .venv/bin

.PHONY: help setup lint format typecheck lock lock-check test-fast test verify

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' Makefile | sed -E 's/:.*## /\t/'

setup:  ## .venv with the pinned pipeline and the test and lint tools (sh setup.sh --dev)
	sh setup.sh --dev

lint:  ## ruff lint and format checks, as .ci/run and the pre-commit hooks run them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck:  ## mypy over transfer/ and stages/ (configured in pyproject.toml)
	$(BIN)/mypy

lock:  ## recompile requirements*.txt from pyproject.toml's dependencies, keeping every pin it allows (uv)
	$(BIN)/python .ci/locks.py

lock-check:  ## are requirements*.txt what pyproject.toml compiles to? (uv, in a temporary folder)
	$(BIN)/python .ci/locks.py --check

test-fast:  ## the tests without dvc and subprocess runs (54.6 s on 2 cores: benchmarks/results/suite_cpu.json)
	$(BIN)/python -m pytest -m "not e2e"

test:  ## every test (389.2 s on 2 cores; -n 0 for one process)
	$(BIN)/python -m pytest

verify:  ## is the committed dvc.lock up to date with the code, params and data? (python -m tools.verify)
	$(BIN)/python -m tools.verify
