# `make lab` opens the walkthroughs, `make test` runs every test and re-checks every notebook.
# Both create the project environment in .venv/ first when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.detviz-installed

.PHONY: lab test notebooks

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[pinned]'
	touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# Re-execute every notebook in place with the project kernel (after changing one on purpose).
notebooks: $(STAMP)
	$(VENV)/bin/python tools/execute_notebooks.py notebooks/*.ipynb
