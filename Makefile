# Two commands do all set-up on a fresh clone: `make demo` (the main job) and `make test`.
# Both create .venv when missing and install imgpref with the pinned versions in constraints.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.imgpref-installed
OUT ?= runs/demo

.PHONY: install demo test test-small lint clean-venv

install: $(STAMP)

# --no-cache-dir: torch's CUDA wheels are several GB; a second copy in pip's cache can fill a small disk.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade "pip>=24"
	$(PY) -m pip install --quiet --no-cache-dir -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/imgpref demo --out $(OUT)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The learning test at the demo's scale (toy small model; 4-10 min on 2 cores): not part of `make test`.
test-small: install
	HF_HUB_OFFLINE=1 IMGPREF_SMALL_TESTS=1 $(PY) -m pytest -q -s -m small_model

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
