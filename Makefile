# The two set-up commands of the README. Each creates the virtual environment (.venv) when it is missing or
# when pyproject.toml changed since it was made, then runs its job.
PYTHON ?= python3.11
VENV := .venv
EXTRAS := runtime,dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: run test lint clean-venv

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# The main job on the embedded default (for now the safety-filter demo; the simulated robot loop replaces it).
run: $(STAMP)
	$(VENV)/bin/eva safety demo --out artifacts/safety_demo.png

# The whole test suite, plus lint (ruff) so a style error fails like a test.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest

clean-venv:
	rm -rf $(VENV)
