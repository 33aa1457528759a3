# Fresh-machine set-up: `make demo` (install + main job) and `make test` (install + tests).
# Both create .venv if missing and install the CPU build of torch before the project,
# so nothing downloads a multi-GB CUDA build.
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: demo test test-slow test-gpu test-min lint

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

# The oldest versions pyproject.toml allows: every dependency at its floor (torch excepted: the
# CPU build on disk, the only one these machines can install), then the tests of the package's
# own code (benchmarks and their extras excluded).
MIN_VENV := .venv-min
MIN_TESTS := tests/test_estimators.py tests/test_checkpoint.py tests/test_priors.py tests/test_train.py \
	tests/test_heads.py tests/test_inference.py tests/test_inputs_columns.py tests/test_inputs_edges.py \
	tests/test_selection.py tests/test_imports.py

test-min:
	test -x $(MIN_VENV)/bin/python || python3 -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet $(TORCH)
	$(MIN_VENV)/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
		print('\n'.join(d.replace('>=', '==') for d in deps if not d.startswith(('torch', 'tomli'))))" > $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/python -m pip install --quiet -r $(MIN_VENV)/floors.txt pytest hypothesis
	$(MIN_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider $(MIN_TESTS)

# The CUDA path, on a machine with a GPU, run by a Python that has a CUDA build of torch and
# the project's dependencies (GPU_PY; the CPU build in .venv sees no GPU, so every test skips).
GPU_PY ?= python3
test-gpu:
	PYTHONPATH=. $(GPU_PY) -m pytest -m gpu

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check pfn priors benchmarks tests
