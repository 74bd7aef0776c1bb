# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-tiny test lint typecheck clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Every CPU profile (the extras in pyproject.toml) at the exact versions of constraints.txt.
	$(BIN)/pip install -q -c constraints.txt -e ".[all,dev]"
	# TensorRT's API types for mypy; --no-deps because its dependency pulls the TensorRT libraries.
	$(BIN)/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	# The ONNX Runtime of Triton 24.10, beside the project's (tests load exports in it: tests/test_releases.py).
	$(BIN)/pip install -q --no-deps --upgrade --target $(VENV)/runtimes/onnxruntime-1.19.2 onnxruntime==1.19.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tritonstack demo

demo-tiny: $(STAMP)
	$(BIN)/tritonstack demo --preset tiny --steps 30

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) checkpoints .mypy_cache .pytest_cache .ruff_cache
	find triton_repo -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitignore -exec rm -rf {} +
