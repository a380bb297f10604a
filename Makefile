# Everything a developer or CI needs, from a fresh clone. Needs python3 (3.11+),
# Java 17+ and Maven (for the test broker's jars, fetched from Maven Central).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test unit demo check-config bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The whole suite: unit tests, then the integration tests against a real Kafka broker
# the tests start themselves (or $KAFKA_BOOTSTRAP_SERVERS) and the UserFlux stand-in.
test: install
	$(BIN)/python -m tests.support.kafka_broker fetch
	$(BIN)/python -m pytest

# Only the fast tests (no Kafka).
unit: install
	$(BIN)/python -m pytest tests/unit

# A local broker and UserFlux stand-in, sample events, the connector on config/demo.yaml.
demo: install
	$(BIN)/python -m tests.support.demo

# The benchmark (not part of `make test`): the real CLI against a local broker and a fast
# UserFlux sink; see the README's "Benchmark". Flags go in ARGS, for instance
#   make bench ARGS="--events 100000 --runs 3 --scenario a"
bench: $(VENV)/.bench-installed
	$(BIN)/python -m tests.benchmark $(ARGS)

# The benchmark's extra tools (py-spy, for --profile).
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

# Validate every example configuration.
check-config: install
	@for f in config/*.yaml; do \
	  USERFLUX_API_KEY=example KAFKA_BOOTSTRAP_SERVERS=localhost:9092 KAFKA_USERNAME=user KAFKA_PASSWORD=example \
	  $(BIN)/userflux-connector check --config $$f >/dev/null && echo "$$f: OK" || exit 1; \
	done

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info
