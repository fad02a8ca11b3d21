# `make lab` opens the walkthroughs, `make test` runs every test and re-checks every notebook,
# `make site` renders the walkthroughs and the API reference as static pages in build/site/.
# Each creates the project environment in .venv/ first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.detviz-installed
# Jupyter refuses to run as root (as in most containers) unless told to.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# More options for Jupyter Lab, e.g. `make lab LAB_ARGS="--no-browser --port=8890"`.
LAB_ARGS ?=

.PHONY: lab test notebooks site

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[pinned]'
	touch $(STAMP)

# Rooted at the repository, so the file browser reaches data/notes/ as well as notebooks/.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(ALLOW_ROOT) $(LAB_ARGS) notebooks/00_start_here.ipynb

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# Re-execute every notebook in place with the project kernel (after changing one on purpose).
notebooks: $(STAMP)
	$(VENV)/bin/python tools/execute_notebooks.py notebooks/*.ipynb

# Render the stored outputs (nothing is executed) into build/site/; open build/site/index.html.
site: $(STAMP)
	$(VENV)/bin/python docs/build_site.py build/site
