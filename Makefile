# The two set-up commands of the README. Each creates the virtual environment (.venv) when it is missing or
# when pyproject.toml changed since it was made, then runs its job.
PYTHON ?= python3.11
export MUJOCO_GL ?= egl
VENV := .venv
EXTRAS := runtime,sim,train,ros,piper,dev
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: run test lint clean-venv

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# The main job on the embedded default: the autonomous policy (oracle world model -> shipped IDM -> executability
# gate -> executor -> safety filter) driving the simulated robot, every episode logged and reported, then the
# safety-filter demo picture.
run: $(STAMP)
	$(VENV)/bin/eva run --task transfer_cube --episodes 5 --log artifacts/eva_run.db
	$(VENV)/bin/eva safety demo --out artifacts/safety_demo.png

# The whole test suite, plus lint (ruff) so a style error fails like a test.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest

clean-venv:
	rm -rf $(VENV)
