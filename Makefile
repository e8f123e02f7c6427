# labkit: two commands.
#   make lab    set up .venv (first time only) and open the course in JupyterLab
#   make test   set up .venv (first time only) and run every test, notebooks included
# Cluster nodes: make lab PORT=8899 NO_BROWSER=1

# The pinned stack installs on Python 3.11 to 3.13; CI tests 3.11 (the version the wheels on the CI box are for).
ifndef PYTHON
PYTHON := $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
NO_BROWSER ?=
LAB    ?= 01-flops
PYTEST_ARGS ?=
ARGS   ?=
WORKSPACE ?= mywork

.PHONY: install lab lab-instructor validate test test-unit test-notebooks test-grading test-gpu compile-kernels release autograde export stats bench-peaks slides clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(None if (3, 11) <= v <= (3, 13) else \
		f"labkit needs Python 3.11, 3.12 or 3.13 ({sys.executable} is {sys.version.split()[0]}): " + \
		("numpy 2.4 and scipy 1.17, pinned in pyproject.toml, need 3.11 or newer" if v < (3, 11) else \
		 "the pinned torch 2.13 and triton 3.7 are not known to work on it (pyproject.toml allows up to 3.13)") + \
		". Pick one with: make PYTHON=/path/to/python3.11 ...")'
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; v == (3, 11) or print(f"note: Python {v[0]}.{v[1]}: supported, but CI tests 3.11; on Linux x86_64 pip may download the multi-GB CUDA build of torch")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# One pip command installs the whole pinned stack, torch==2.13.0 included (see pyproject.toml).
	$(BIN)/python -m pip install --disable-pip-version-check -e .
	touch $(STAMP)

install: $(STAMP)

# Inside a SLURM job (a compute node, often offline) an existing .venv is never re-installed.
LAB_DEPS := $(if $(and $(SLURM_JOB_ID),$(wildcard $(BIN)/python)),,$(STAMP))
JUPYTER  = $(BIN)/jupyter lab --port=$(PORT) $(if $(NO_BROWSER),--no-browser --ip=127.0.0.1) \
	$(if $(filter command line environment,$(origin PORT)),--ServerApp.port_retries=0) \
	$(if $(filter 0,$(shell id -u)),--allow-root)
# nbgrader (and the formgrader inside JupyterLab) call `alembic` by name: .venv/bin first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Students: your own copy of every lab (student versions, made once in $(WORKSPACE)/, never overwritten).
lab: $(LAB_DEPS)
	@[ $(STAMP) -nt pyproject.toml ] || echo "note: pyproject.toml changed since .venv was installed: run 'make install' (on a login node) to update it"
	$(BIN)/python -m ipykernel install --user --name labkit --display-name "Python (labkit)" >/dev/null
	$(BIN)/python -m labkit.grading workspace --dest $(WORKSPACE)
	$(JUPYTER) --ServerApp.root_dir=$(WORKSPACE)

# Instructors and self-learners who want the solutions: the course root (notebooks/ with solutions and
# hidden tests, the formgrader under Nbgrader > Formgrader).
lab-instructor: $(LAB_DEPS)
	$(BIN)/python -m ipykernel install --user --name labkit --display-name "Python (labkit)" >/dev/null
	$(JUPYTER) --ServerApp.root_dir=$(CURDIR)

# Students: run the visible tests of your copy of $(LAB) before handing it in.
validate: $(LAB_DEPS)
	$(BIN)/nbgrader validate $(WORKSPACE)/$(LAB)/$(LAB).ipynb

# Everything: unit tests, every notebook in quick mode (nbval), the grading pipeline.
test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-cell-timeout=300 --timeout=900 --durations=25 $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not integration" $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest notebooks --nbval-lax --nbval-cell-timeout=300 $(PYTEST_ARGS)

test-grading: $(STAMP)
	$(BIN)/python -m pytest tests/test_grading.py $(PYTEST_ARGS)

# On a GPU node (e.g. srun --gres=gpu:1 make test-gpu): the GPU-marked tests, then the recordings
# the labs show to students without a GPU (data/measurements/, with provenance), then every lab
# with QUICK off (executed copies in runs/).
test-gpu: $(STAMP)
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU: run it on a GPU node (srun --gres=gpu:1 make test-gpu)')"
	$(BIN)/python -m pytest tests -m gpu $(PYTEST_ARGS)
	$(BIN)/python scripts/bench_kernels.py
	$(BIN)/python scripts/record_sparse.py
	$(BIN)/python scripts/record_energy.py
	mkdir -p runs
	for nb in notebooks/*/*.ipynb; do $(BIN)/papermill "$$nb" "runs/$$(basename $$nb .ipynb)-full.ipynb" -p QUICK False --cwd "$$(dirname $$nb)" || exit 1; done

# Every Triton kernel compiled for A100 (sm_80) and H100 (sm_90) here, no GPU needed: registers, spills, shared memory.
compile-kernels: $(STAMP)
	$(BIN)/python scripts/compile_kernels.py --targets 75,80,90

# Instructor: student version of a lab into release/$(LAB)/ (solutions and hidden tests stripped).
release: $(STAMP)
	$(BIN)/python -m labkit.grading release $(LAB)

# Instructor: grade submitted/<student>/$(LAB)/ into autograded/ and the gradebook; print status and scores.
# ARGS: --student S, --rerun, --workers N, --timeout S (per cell); see python -m labkit.grading autograde -h
autograde: $(STAMP)
	$(BIN)/python -m labkit.grading autograde $(LAB) $(ARGS)

# Instructor: per-exercise class statistics and a plot (class-$(LAB).png).
stats: $(STAMP)
	$(BIN)/python -m labkit.grading stats $(LAB)

# Instructor: grades-$(LAB).csv with a status and one column per exercise, for an LMS.
export: $(STAMP)
	$(BIN)/python -m labkit.grading export $(LAB)

# Measure this machine's peaks again (matmul FLOP/s per dtype, copy bandwidth) and cache them.
bench-peaks: $(STAMP)
	$(BIN)/python -c "import labkit; from labkit import hw; print(hw.describe_peaks(hw.measured_peaks(refresh=True)))"

# Lecture decks (reveal.js, offline) from slides/src/*.md into slides/build/; PDFs too where chromium is installed.
slides: $(STAMP)
	$(BIN)/python scripts/build_slides.py $(if $(shell command -v chromium),--pdf)

clean:
	rm -rf release autograded feedback gradebook.db grading-status grades-*.csv class-*.png .pytest_cache .cache
