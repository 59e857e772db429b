# Two entry points (see README): `make demo` runs the main job, `make test` the whole suite.
# Both create .venv on first use and install through constraints.txt (pins the CPU torch and
# lightning: the `frameworks` extra, so CI runs the Lightning adapter's tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,frameworks]'
	touch $(STAMP)

# The round-trip harness on the bundled reference example; report in ckpt-report.md. The `=`
# form matters: `--ckpt-report PATH` with an existing PATH is taken for a test path when pytest
# picks its rootdir (before plugin options are known), and the example's configuration is lost.
demo: $(STAMP)
	cd examples/reference && ../../$(BIN)/python -m pytest --ckpt-report=../../ckpt-report.md

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two xdist workers: the suite is sized for two cores (see README, Running the tests).
test: lint
	$(BIN)/python -m pytest -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m slow
