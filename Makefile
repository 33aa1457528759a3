# Fresh-machine set-up: `make demo` (install + main job) and `make test` (install + tests).
# Both create .venv if missing and install the CPU build of torch before the project,
# so nothing downloads a multi-GB CUDA build.
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: demo test test-slow test-gpu lint

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[bench,dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/pfn demo

test: $(VENV)/.installed
	$(PY) -m pytest

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow

# The CUDA path, on a machine with a GPU, run by a Python that has a CUDA build of torch and
# the project's dependencies (GPU_PY; the CPU build in .venv sees no GPU, so every test skips).
GPU_PY ?= python3
test-gpu:
	PYTHONPATH=. $(GPU_PY) -m pytest -m gpu

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check pfn priors benchmarks tests
