# syntax=docker/dockerfile:1.7
#
# One build, three small images: pick one with --target.
#
#   docker build --target producer -t sluice-producer .
#   docker build --target consumer -t sluice-consumer .
#   docker build --target registry -t sluice-registry .
#
# Each image runs as an unprivileged user (uid 10001), carries its example config at /etc/sluice/<service>.toml
# (SLUICE_CONFIG points there; override any key with SLUICE_* variables or mount another file) and the Avro
# schemas at /usr/share/sluice/schemas, and answers its own HEALTHCHECK on /healthz.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------------------------
# Build: every binary in one cargo invocation, so dependencies compile once for all three images.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# librdkafka is built from source by rdkafka-sys (bundled, never Debian's): it needs make, a C/C++ toolchain and
# zlib; schema_registry_converter's TLS needs OpenSSL headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are copied out of the cached
# target dir because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice-producer --bin sluice-consumer --bin sluice-registry \
 && mkdir -p /out /out/lake \
 && cp target/release/sluice-producer target/release/sluice-consumer target/release/sluice-registry /out/

# ---------------------------------------------------------------------------------------------------------------
# Runtime base shared by the three images: just what the binaries link against, plus curl for HEALTHCHECK.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin sluice
COPY schemas/avro/ /usr/share/sluice/schemas/
ENV RUST_LOG=info,rdkafka=warn
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# ---------------------------------------------------------------------------------------------------------------
FROM runtime AS producer
COPY --from=build /out/sluice-producer /usr/local/bin/sluice-producer
COPY config/producer.toml /etc/sluice/producer.toml
ENV SLUICE_CONFIG=/etc/sluice/producer.toml
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/sluice-producer"]

# ---------------------------------------------------------------------------------------------------------------
FROM runtime AS consumer
COPY --from=build /out/sluice-consumer /usr/local/bin/sluice-consumer
COPY config/consumer.toml /etc/sluice/consumer.toml
ENV SLUICE_CONFIG=/etc/sluice/consumer.toml
# `sluice-consumer lake` writes here by default in a container; a volume mounted on it starts with this owner.
COPY --chown=10001:10001 --from=build /out/lake /var/lib/sluice/lake
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8082/healthz"]
ENTRYPOINT ["/usr/local/bin/sluice-consumer"]

# ---------------------------------------------------------------------------------------------------------------
FROM runtime AS registry
COPY --from=build /out/sluice-registry /usr/local/bin/sluice-registry
COPY config/registry.toml /etc/sluice/registry.toml
ENV SLUICE_CONFIG=/etc/sluice/registry.toml
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8081/healthz"]
ENTRYPOINT ["/usr/local/bin/sluice-registry"]
