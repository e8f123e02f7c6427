# labkit: two commands.
#   make lab    set up .venv (first time only) and open the course in JupyterLab
#   make test   set up .venv (first time only) and run every test, notebooks included
# Cluster nodes: make lab PORT=8899 NO_BROWSER=1

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
NO_BROWSER ?=
LAB    ?= 01-flops
PYTEST_ARGS ?=

.PHONY: install lab test test-unit test-notebooks test-grading release autograde bench-peaks slides clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"labkit needs Python 3.11, {sys.executable} is {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# One pip command installs the whole pinned stack, torch==2.13.0 included (see pyproject.toml).
	$(BIN)/python -m pip install --disable-pip-version-check -e .
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name labkit --display-name "Python (labkit)" >/dev/null
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks --port=$(PORT) $(if $(NO_BROWSER),--no-browser --ip=127.0.0.1) \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# Everything: unit tests, every notebook in quick mode (nbval), the grading pipeline.
test: $(STAMP)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-cell-timeout=300 --timeout=900 --durations=10 $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not integration" $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest notebooks --nbval-lax --nbval-cell-timeout=300 $(PYTEST_ARGS)

test-grading: $(STAMP)
	$(BIN)/python -m pytest tests/test_grading.py $(PYTEST_ARGS)

# Instructor: student version of a lab into release/$(LAB)/ (solutions and hidden tests stripped).
release: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m labkit.grading release $(LAB)

# Instructor: grade submitted/<student>/$(LAB)/ into autograded/ and the gradebook; print the scores.
autograde: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m labkit.grading autograde $(LAB)

# Measure this machine's peaks again (matmul FLOP/s per dtype, copy bandwidth) and cache them.
bench-peaks: $(STAMP)
	$(BIN)/python -c "import labkit; from labkit import hw; print(hw.describe_peaks(hw.measured_peaks(refresh=True)))"

# Per-lab slides (reveal.js HTML) from the notebooks' markdown and code, into slides/.
slides: $(STAMP)
	for nb in notebooks/*/*.ipynb; do \
		$(BIN)/jupyter nbconvert --to slides --output-dir slides "$$nb" || exit 1; \
	done

clean:
	rm -rf release autograded feedback gradebook.db .pytest_cache .cache
