# `make demo` and `make test` set everything up on a fresh machine (a .venv with the project installed).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-lowest lint bench clean

# pytest-xdist workers: one more than the cores this process may use. The suite's tests spend part of their time
# waiting (commands they start, servers, a store's answers); a third worker on 2 cores fills it: 16.2 min, not 17.7.
WORKERS ?= $(shell $(PYTHON) -c "import os; print(len(os.sched_getaffinity(0)) + 1 if hasattr(os, 'sched_getaffinity') else os.cpu_count() + 1)")

# editable_mode=compat: the project's folder on the path, so a folder named cube/ where a command runs (the demo's
# cube) is not taken for the package `cube` (setuptools' default editable hook is consulted after the path);
# setuptools calls the mode transitional, so pyproject.toml keeps the build to setuptools < 85, which has it
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]" --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cardcube demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile

# The suite on the lowest versions pyproject.toml allows (uv's lowest-direct resolution), in .venv-lowest: run it
# when a lower bound changes or the code takes up a dependency's newer API. Not part of `make test` (CI).
# lowest-direct alone takes a direct dependency's floor only where no other package asks for more (s3fs's lowest
# release allowed an aiobotocore pinning botocore 1.41, above our 1.36), so each floor is also a constraint
# (constraints.txt, from pyproject.toml): uv picks the others to fit every floor, or fails naming the one it cannot.
LOWEST := .venv-lowest
LOWEST_EXTRAS := test bench
test-lowest: $(STAMP)
	$(BIN)/python -m pip install --quiet "uv>=0.5"
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(BIN)/python tests/lowest_constraints.py pyproject.toml $(LOWEST_EXTRAS) > $(LOWEST)/constraints.txt
	rm -f $(LOWEST)/requirements.txt  # else uv prefers an earlier run's picks of the indirect ones
	$(BIN)/uv pip compile --quiet pyproject.toml $(addprefix --extra ,$(LOWEST_EXTRAS)) --resolution lowest-direct \
		--constraints $(LOWEST)/constraints.txt --python $(LOWEST)/bin/python -o $(LOWEST)/requirements.txt
	$(BIN)/uv pip sync --quiet --python $(LOWEST)/bin/python $(LOWEST)/requirements.txt
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --no-deps -e . -C editable_mode=compat
	$(LOWEST)/bin/python -m pytest -q -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(LOWEST) demo-data .pytest_cache .numba-cache
