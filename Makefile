# Two commands on a fresh machine: `make demo` (the main job, offline) and `make test`.
# Both create the virtual environment on first use. VENV may point at a cached environment (CI does that).

VENV ?= .venv
PYTHON := $(VENV)/bin/python

# torch and torchvision are pinned as a pair: open_clip imports torchvision, and 2.14.1 / 0.29.1 is the pair that
# installs and imports together on our machines (the CPU-only torch 2.13.0 wheel has no matching torchvision).
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test env docs

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet $(TORCH_PAIR)
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

demo: env
	$(PYTHON) -m cliplens demo

test: env
	$(PYTHON) -m pytest -q

docs: env
	$(PYTHON) -m mkdocs build --strict --site-dir site
