# One image with every callflow binary (the services, provider-sim, and the
# `callflow` CLI for operators: `callflow events …`).
#
# Why one image rather than one per service: the services are one Cargo
# workspace sharing nearly all their dependencies (tokio, tonic, the
# generated protobuf code, kit), so one `cargo build --release --bins`
# compiles everything once, and per-service images would repeat the same
# build or the same layers twelve times. One tag rolls out a release that was
# tested together; the Deployment's `command` picks the binary
# (infra/k8s/base/<service>/deployment.yaml). The runtime stage holds only
# Debian slim, CA certificates and the binaries, stripped of their debug
# information (symbols stay, so a panic's backtrace names its functions):
# at most about 36 MB each (callflow, which links every service).
#
#   docker build -t callflow:dev .
#   docker run --rm callflow:dev event-store --help
#
# Plain instructions, so BuildKit and the legacy builder both build it.

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace (see .dockerignore): Cargo needs every member's manifest
# and sources, proto/ its .proto files, and call-router's tests the example
# scenarios under infra/.
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir -p /out \
    && for bin in event-store call-ingest consent-analyzer reminder-scheduler sms-sender \
                  notifier transcription analytics lead-dialer call-router console provider-sim callflow; do \
         cp "target/release/$bin" /out/ && strip --strip-debug "/out/$bin"; \
       done

# Runtime: Debian slim (glibc, as the binaries were linked against; CA
# certificates for the providers' HTTPS APIs; time-zone data is compiled into
# the binaries) and nothing else. No shell is needed by the services.
FROM debian:bookworm-slim AS runtime
# ca-certificates unpinned: the current bookworm package, with its security fixes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 callflow \
    && useradd --system --uid 10001 --gid callflow --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin callflow
COPY --from=build /out/ /usr/local/bin/
# The example routing scenarios, for `call-router` run outside Kubernetes
# (the manifests mount their own from a ConfigMap).
COPY infra/call-router/scenarios.toml /etc/callflow/call-router/scenarios.toml
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# No default service: the Deployment's command names the binary.
CMD ["callflow", "--help"]
