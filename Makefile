# Set-up is automatic: each target creates .venv and installs relay into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# A development signing secret so that `make run` works with no credentials. Verification
# stays on: `make send-test` signs with the same secret. Never use it in production.
DEV_SECRET := whsec_cmVsYXktZGV2LXNlY3JldC1ub3QtZm9yLXByb2Q=
export CLERK_WEBHOOK_SIGNING_SECRET ?= $(DEV_SECRET)

.PHONY: run studio test lint unit rules-test floors lock send-test check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## run: relay on http://127.0.0.1:8000 with SQLite in ./relay.db; sinks in dry-run (log only)
run: $(STAMP)
	$(BIN)/relay serve --dry-run

## studio: the template studio on http://127.0.0.1:8050 (renders rules.yaml live; sends nothing)
studio: $(STAMP)
	$(BIN)/relay studio

## send-test: post a signed sample user.created to the relay that `make run` started
send-test: $(STAMP)
	$(BIN)/relay send-test samples/user.created.json

## check: validate rules.yaml and render every template against samples/
check: $(STAMP)
	$(BIN)/relay check

## test: lint, type-check, the golden tests of the shipped rules and the examples, and the whole
## test suite (what CI runs)
test: lint rules-test unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/hadolint Dockerfile

## rules-test: `relay test` on rules.yaml and on each example's rules (their rules.test.yaml)
rules-test: $(STAMP)
	$(BIN)/relay test
	for rules in examples/*/rules.yaml; do $(BIN)/relay test --rules $$rules || exit 1; done

# The suite runs on up to 4 worker processes (pytest-xdist): the end-to-end tests mostly wait on
# real relay processes, so two workers on two cores halve the run.
PYTEST_WORKERS := -n auto --maxprocesses 4

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_WORKERS)

## floors: the unit tests on the lowest versions pyproject.toml allows (a venv of their own)
floors: $(STAMP)
	rm -rf .venv-floors
	$(BIN)/uv venv -q -p "$$(command -v $(PYTHON))" .venv-floors
	$(BIN)/uv pip install -q --python .venv-floors/bin/python --resolution lowest-direct -e '.[dev]'
	.venv-floors/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_WORKERS) --ignore=tests/e2e

## lock: pin the image's dependencies (requirements.lock: versions and hashes) from pyproject.toml
lock: $(STAMP)
	printf 'setuptools>=69\n' | $(BIN)/uv pip compile pyproject.toml - --universal \
		--python-version 3.11 --generate-hashes --custom-compile-command "make lock" -q \
		-o requirements.lock

clean:
	rm -rf $(VENV) .venv-floors .mypy_cache .ruff_cache .pytest_cache .hypothesis
