# Everything a developer or CI needs, from a fresh clone. Needs python3 (3.11+),
# Java 17+ and Maven (for the test broker's jars, fetched from Maven Central).
# `make image` also needs root, for apt-get and buildah.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test unit image image-tools demo check-config clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The whole suite: unit tests, the Dockerfile tests, then the integration tests against
# a real Kafka broker the tests start themselves (or $KAFKA_BOOTSTRAP_SERVERS) and the
# UserFlux stand-in.
test: install
	$(BIN)/python -m tests.support.kafka_broker fetch
	$(BIN)/python -m pytest

# Only the fast tests (no Kafka).
unit: install
	$(BIN)/python -m pytest tests/unit

# buildah builds the image without a Docker engine; debootstrap makes its base image.
image-tools:
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y buildah debootstrap; }

# The container image, as localhost/userflux-connector:test in buildah's storage
# (~/.cache/userflux-connector/buildah), on a locally made Debian base (cached).
image: install image-tools
	$(BIN)/python -m tests.support.image build

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
