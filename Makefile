# The two commands (see README): `make demo` and `make test`. Everything else is set up on the way.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test unit integration bench kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

deploy/kafka/lib/.resolved: deploy/kafka/pom.xml
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies
	touch $@

# The dashboard test drives headless Chromium; Debian's package, installed once when we may (root).
/usr/bin/chromium:
	-@[ "$$(id -u)" = 0 ] && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: the dashboard test will skip" >&2

setup: $(STAMP) deploy/kafka/lib/.resolved /usr/bin/chromium

## The demo: broker, worker, simulated shoppers, live intents (Ctrl-C stops it).
demo: setup
	$(BIN)/intentstream demo $(ARGS)

## All tests: unit tests and integration tests against a real broker this run starts and stops.
test: setup
	$(BIN)/python -m pytest -q

unit: setup
	$(BIN)/python -m pytest -q tests/unit

integration: setup
	$(BIN)/python -m pytest -q tests/integration

kafka-start: setup
	$(BIN)/intentstream kafka start

kafka-stop:
	$(BIN)/intentstream kafka stop

clean:
	rm -rf var/ .pytest_cache
