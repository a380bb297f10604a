# Everything a developer or CI needs, from a fresh clone. Needs python3 (3.11+),
# Java 17+ and Maven (for the test broker's jars, fetched from Maven Central), Go (to
# build promtool, which checks the alert rules and the dashboard's queries), and openssl
# (the TLS tests make their own certificates).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Built tools live outside the clone, shared by every checkout on the machine.
TOOLS ?= $(HOME)/.cache/userflux-connector/tools
PROMTOOL_VERSION := v0.316.0
PROMTOOL := $(TOOLS)/promtool

.PHONY: install test unit monitoring dashboard promtool demo check-config clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The whole suite: unit tests, then the integration tests against a real Kafka broker
# the tests start themselves (or $KAFKA_BOOTSTRAP_SERVERS) and the UserFlux stand-in.
test: install $(PROMTOOL)
	$(BIN)/python -m tests.support.kafka_broker fetch
	PROMTOOL=$(PROMTOOL) $(BIN)/python -m pytest

# Only the fast tests (no Kafka).
unit: install
	$(BIN)/python -m pytest tests/unit

# The dashboard and the alert rules: structure, promtool checks, the rules' unit tests.
monitoring: install $(PROMTOOL)
	PROMTOOL=$(PROMTOOL) $(BIN)/python -m pytest tests/dashboards

# Write dashboards/userflux-connector.json from dashboards/build_dashboard.py.
dashboard: install
	$(BIN)/python -m dashboards.build_dashboard

promtool: $(PROMTOOL)

# Prometheus' promtool, built once from the Go module proxy (a few minutes).
$(PROMTOOL):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

# A local broker and UserFlux stand-in, sample events, the connector on config/demo.yaml.
demo: install
	$(BIN)/python -m tests.support.demo

# Validate every example configuration.
check-config: install
	@for f in config/*.yaml; do \
	  USERFLUX_API_KEY=example KAFKA_BOOTSTRAP_SERVERS=localhost:9092 KAFKA_USERNAME=user KAFKA_PASSWORD=example \
	  $(BIN)/userflux-connector check --config $$f >/dev/null && echo "$$f: OK" || exit 1; \
	done

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info
