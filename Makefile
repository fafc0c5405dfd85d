# PatientGraph: `make demo` (synthetic cohort -> pipeline -> explorer) and `make test` set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
PATIENTS ?= 200
PORT   ?= 8050

.PHONY: install demo test bench lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/patientgraph synth $(DEMO)/cohort --patients $(PATIENTS) --seed 0
	$(BIN)/patientgraph ingest deeplesion --info $(DEMO)/cohort/DL_info.csv \
	    --images $(DEMO)/cohort/Images_png --records $(DEMO)/cohort/records.csv \
	    --outcomes $(DEMO)/cohort/outcomes.csv --studies $(DEMO)/cohort/studies.csv \
	    --workspace $(DEMO)/workspace
	$(BIN)/patientgraph run --workspace $(DEMO)/workspace
	$(BIN)/patientgraph info --workspace $(DEMO)/workspace
	@echo "explorer: http://127.0.0.1:$(PORT)  (Ctrl-C stops it)"
	$(BIN)/patientgraph serve --workspace $(DEMO)/workspace --port $(PORT)

test: install
	$(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
