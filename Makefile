# PatientGraph: `make demo` (synthetic cohort -> pipeline -> explorer) and `make test` set everything up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
PATIENTS ?= 200
PORT   ?= 8050

.PHONY: system install demo test check bench lint clean

# Debian packages the tests and the Neo4j launcher need, as "command:package" pairs.
SYSTEM_NEEDS := java:openjdk-17-jdk-headless mvn:maven chromium:chromium chromedriver:chromium-driver

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Installs what is missing with apt when run as root; otherwise says what to install.
system:
	@missing=""; for pair in $(SYSTEM_NEEDS); do \
	    command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	    echo "missing system packages:$$missing (install them, e.g. sudo apt-get install$$missing)" >&2; \
	    exit 1; \
	fi

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

test: system install
	$(BIN)/python -m pytest -n 2 -q

# The fast tier for daily work: no Neo4j server, no browser, no full pipeline runs.
check: install
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
