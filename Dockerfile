# The connector's container image.
#
#   make image      # builds it with buildah (no Docker engine needed); `docker build .` works too
#
# BASE_IMAGE is any Debian-based image with python3 (3.11+), its venv module and the CA
# certificates at /etc/ssl/certs/ca-certificates.crt: by default the official slim Python
# image, pinned to a patch release and to its multi-platform index digest. Both stages
# use the same base, so the virtual environment built in the first one runs unchanged
# in the second (its interpreter path is the base's).
ARG BASE_IMAGE=docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---- builder: the wheel, and a virtual environment with it and its dependencies ----------
FROM ${BASE_IMAGE} AS builder

# pip trusts the system CA bundle, so a build behind a TLS-inspecting proxy works when
# the host's bundle is mounted over it (make image does that, read-only).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector

# The connector's dependencies ship binary wheels (confluent-kafka bundles librdkafka),
# so no compiler is needed, here or later. The runtime environment gets no pip: the
# builder's pip installs into it from outside (--python).
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist . \
 && python3 -m venv --without-pip /opt/userflux-connector \
 && /opt/build/bin/pip --python /opt/userflux-connector/bin/python install --compile /dist/*.whl \
 && /opt/userflux-connector/bin/userflux-connector --version

# ---- runtime: the base plus the virtual environment, nothing else ------------------------
FROM ${BASE_IMAGE}

# make image passes the project's version and commit; the default version is kept equal
# to pyproject.toml's by a test, for a plain `docker build .`.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=https://github.com/userflux/userflux-connector
LABEL org.opencontainers.image.title="userflux-connector" \
      org.opencontainers.image.description="Stream product-analytics events from Apache Kafka to UserFlux, at least once." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged user: Kubernetes' runAsNonRoot can verify a numeric UID, and
# files stay readable when the platform picks another UID (the tree is world-readable).
ARG UID=10001
RUN groupadd --gid "${UID}" connector \
 && useradd --uid "${UID}" --gid connector --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin connector \
 && mkdir -p /etc/userflux-connector

COPY --from=builder /opt/userflux-connector /opt/userflux-connector

# Nothing is written at run time: no bytecode (compiled at install), no temp files, so
# a read-only root filesystem works without any writable mount; except for Protobuf
# topics, whose schemas protoc compiles from files in $TMPDIR (default /tmp): give it a
# small writable /tmp (the Helm chart mounts one in memory when a registry is set).
ENV PATH=/opt/userflux-connector/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER ${UID}:${UID}
WORKDIR /
EXPOSE 9464

# Exec form: the connector is PID 1 itself, with no shell in between, and installs its
# own SIGTERM/SIGINT handlers (a handled signal reaches PID 1; the kernel only drops
# signals PID 1 has no handler for). It starts no child processes, so nothing needs
# reaping and no init process is needed.
STOPSIGNAL SIGTERM
ENTRYPOINT ["userflux-connector"]
CMD ["run", "--config", "/etc/userflux-connector/config.yaml"]
