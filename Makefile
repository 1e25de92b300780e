# The README's two commands: `make serve` and `make test`. Each sets up everything it needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dinomix-installed
STUDIES ?= work_studies
HOST ?= 127.0.0.1
PORT ?= 8000
CONF ?=

.PHONY: serve test install studies clean-studies starter

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo ">> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> installing dinomix and its pinned dependencies into $(VENV) (first time: several minutes)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

studies: $(STAMP)
	@$(BIN)/dinomix prepare-studies --output $(STUDIES)

serve: studies
	@echo ""
	@echo "  DINO-Mix MONAI Label server: http://$(HOST):$(PORT)"
	@echo "  3D Slicer: open the DinoMix module (or the stock MONAILabel module) and set the server to http://$(HOST):$(PORT)"
	@echo "  Studies folder: $(abspath $(STUDIES))   (Ctrl-C stops the server)"
	@echo ""
	PATH="$(abspath $(BIN)):$$PATH" MONAI_LABEL_TRACKING_ENABLED=false \
	  $(BIN)/monailabel start_server --app apps/dinomix --studies $(STUDIES) --host $(HOST) --port $(PORT) $(CONF)

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -ra --durations=15 tests

# the starter model served before the first Retrain, from sample_data/ only (see dinomix_core/starter.py)
starter: $(STAMP)
	$(BIN)/dinomix train-starter --studies sample_data/studies --output apps/dinomix/model/pretrained_dinomix.pt

clean-studies:
	rm -rf $(STUDIES)
