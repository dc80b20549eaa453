# strikeflow — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-unit bench install clean screenshot

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole pipeline on embedded services (broker, PostgreSQL, Redis started when not configured).
demo: $(STAMP)
	$(BIN)/strikeflow demo $(DEMO_ARGS)

## Unit + integration tests; the test session starts the services it needs itself.
test: $(STAMP)
	scripts/ensure_chromium.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

## Every benchmark script (they print figures and ratios; never run by `make test`); those that need
## PostgreSQL or Redis use the configured ones or start private ones. `strikeflow bench` is the end-to-end one.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_codec.py
	$(BIN)/python benchmarks/bench_greeks.py
	$(BIN)/python benchmarks/bench_bars.py
	$(BIN)/python benchmarks/bench_checkpoint.py
	$(BIN)/python benchmarks/pricing_stale_quotes.py
	$(BIN)/python benchmarks/bench_analyst_sql.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_recovery.py --no-store-ticks
	$(BIN)/python benchmarks/bench_kafka_compression.py

## Refresh docs/dashboard.png: the browser test's screenshot of the live chain page.
screenshot: $(STAMP)
	scripts/ensure_chromium.sh
	STRIKEFLOW_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(BIN)/python -m pytest tests/test_dashboard_browser.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .strikeflow
