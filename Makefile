# delayconv: set-up, build, test, lint and demo from a fresh checkout.
#
#   make demo         create .venv, install torch and the package, run the demo
#   make test         the same set-up, then lint and the whole test suite
#   make cuda-check   build the CUDA kernels in .venv-cuda (needs nvcc)
#
# TORCH_SPEC picks the torch to install (a CPU build by default); point it at a
# CUDA build to use a GPU, e.g. make test TORCH_SPEC=torch==2.14.1.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CUDA_VENV ?= .venv-cuda
CUDA_TORCH_SPEC ?= torch==2.14.1
PYTEST_ARGS ?=

BIN := $(VENV)/bin
# Only what is compiled: the editable install picks up Python edits by itself.
NATIVE_SOURCES := setup.py $(shell find csrc -type f \
	\( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null)
PY_PATHS := $(wildcard delayconv tests benchmarks setup.py)
CXX_FILES = $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: demo test lint format bench cuda-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# An editable install builds the extension next to the sources, so that code
# run from the checkout (tests, benchmarks, demo) imports the compiled package.
$(VENV)/.built: $(VENV)/.deps $(NATIVE_SOURCES)
	$(BIN)/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

demo: $(VENV)/.built
	$(BIN)/python -m delayconv.demo

lint: $(VENV)/.deps
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/clang-format --dry-run --Werror $(CXX_FILES)

format: $(VENV)/.deps
	$(BIN)/ruff check --fix $(PY_PATHS)
	$(BIN)/ruff format $(PY_PATHS)
	$(BIN)/clang-format -i $(CXX_FILES)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: lint $(VENV)/.built
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

bench: $(VENV)/.built
	$(BIN)/python -m benchmarks

cuda-check:
	bash .ci/cuda-check "$(PYTHON)" "$(CUDA_VENV)" "$(CUDA_TORCH_SPEC)"

clean:
	rm -rf build *.egg-info delayconv/*.so
