# Two entry points (see README): `make demo` runs the main job, `make test` the whole suite.
# Both create .venv on first use and install through constraints.txt (pins the CPU torch and
# lightning: the `frameworks` extra, so CI runs the Lightning adapter's tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint test-torch

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

# Two xdist workers: the suite is sized for two cores (see README, Running the tests). worksteal:
# an idle worker takes tests queued on the other, so a long test drawn last does not leave a
# core idle for its whole length.
test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal

test-slow: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -m slow

# The auditor against another torch (issue 20): `make test-torch TORCH=2.15.0` builds a throwaway
# venv (.venv-torch-2.15.0, gitignored; delete it when done, CUDA builds take ~5 GB) holding that
# torch and the dev extra (everything but torch still pinned by constraints.txt), then runs the
# allowlist contract and the differential tests, nightly size (`-m slow`) included, printing each
# batch's case and disagreement counts (~10 min per torch on 2 cores). The default suite stays on
# the pinned CPU wheel. PIP_CONSTRAINT replaces any machine-wide pip constraint.
TORCH ?= 2.13.0
TORCH_VENV := .venv-torch-$(TORCH)
TORCH_STAMP := $(TORCH_VENV)/.installed-stamp
TORCH_TESTS := tests/audit/test_allowlist_contract.py tests/audit/test_torch_versions.py \
	tests/audit/test_differential_torch.py

$(TORCH_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(TORCH_VENV)
	grep -v '^torch==' constraints.txt > $(TORCH_VENV)/constraints.txt
	echo 'torch==$(TORCH)' >> $(TORCH_VENV)/constraints.txt
	PIP_CONSTRAINT=$(TORCH_VENV)/constraints.txt $(TORCH_VENV)/bin/python -m pip install \
		--quiet 'torch==$(TORCH)' -e '.[dev]'
	touch $(TORCH_STAMP)

test-torch: $(TORCH_STAMP)
	$(TORCH_VENV)/bin/python -c 'import torch; print("torch", torch.__version__)'
	$(TORCH_VENV)/bin/python -m pytest -p no:cacheprovider -q -s -rf -m '' $(TORCH_TESTS)
