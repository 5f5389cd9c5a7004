# The two commands of the README:
#   make demo   set up .venv if needed, then run the main job on the embedded tiny default
#   make test   set up .venv if needed, then run the whole test suite
#   make wheel-check  build the wheel, install it in a fresh environment outside the checkout
#                     and run `pila demo` and a packaged config from there (.ci/wheel.py; CI)
# Installation runs once; later calls skip it in seconds (the stamp file below).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pila-installed
# On a machine with a local CPU wheel this resolves to it; elsewhere pip fetches the
# build for your platform. Set TORCH_SPEC to pin another build (e.g. a CUDA index URL).
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint wheel-check clean

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/pila demo --out $(DEMO_OUT)

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

wheel-check: install
	$(BIN)/python .ci/wheel.py check

lint: install
	$(BIN)/ruff check pila datamodules callbacks tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
