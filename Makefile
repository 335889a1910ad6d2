# callflow — two commands from a fresh machine: `make run` and `make test`.
# Both first make Postgres and NATS (JetStream) available through
# infra/local/services.sh, which reuses running servers or starts private
# ones, and writes their URLs to .local/services.env.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENV_FILE := .local/services.env
# Loads the servers' URLs into the recipe's environment.
LOAD_ENV := set -a; . $(ENV_FILE); set +a

# Development defaults for `make run` (override in the environment).
export CALL_INGEST_EXOLVE_TOKEN ?= dev-exolve-token
export CALL_INGEST_GENERIC_TOKEN ?= dev-generic-token
export CALL_INGEST_LEADS_TOKEN ?= dev-leads-token
export CALL_INGEST_BUSINESS_NUMBERS ?= +74951234567
export RUST_LOG ?= info

BENCH ?=

.PHONY: help services python-client browser k8s-check build run demo test bench lint fmt toolchain clean-local

help:
	@echo "make run    set up Postgres + NATS, build, run every service (callflow up)"
	@echo "make test   set up Postgres + NATS, run the whole test suite"
	@echo "make demo   play a realistic day through the whole system and check it"
	@echo "            (DEMO_SERVE=1: then keep it running to look at it in the console)"
	@echo "make bench  run the benchmarks (BENCH=<name> for one), results in target/bench/"
	@echo "make lint   rustfmt check and clippy with warnings denied"

toolchain:
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs)"; exit 1; }

services:
	@infra/local/services.sh

# The Python subscriber the tests play another team with (nats-py and
# classes generated from proto/, in .local/python); quick when up to date.
python-client:
	@tests/python/setup.sh

# The console's browser tests: Node.js, Debian's Chromium and playwright-core
# (tests/browser/node_modules); installs what is missing, quick once there.
browser:
	@tests/browser/setup.sh

# The Kubernetes manifests (infra/k8s): yamllint, every overlay rendered
# with kubectl kustomize and validated offline against the API schemas, and
# policy checks; installs its tools into .local/k8s-tools, quick once there.
k8s-check:
	@infra/k8s-check.sh

build: toolchain
	cargo build --workspace --bins

run: toolchain services
	cargo build -p callflow
	$(LOAD_ENV); exec target/debug/callflow up

demo: toolchain services
	cargo build -p callflow
	$(LOAD_ENV); RUST_LOG=warn target/debug/callflow demo $(if $(DEMO_SERVE),--serve,)

test: toolchain services python-client browser k8s-check
	@if cargo nextest --version >/dev/null 2>&1; then \
	  $(LOAD_ENV); cargo nextest run --workspace --no-fail-fast; \
	else \
	  $(LOAD_ENV); cargo test --workspace --no-fail-fast; \
	fi

bench: toolchain services
	@$(LOAD_ENV); if [ -n "$(BENCH)" ]; then \
	  cargo bench --workspace --bench "$(BENCH)"; \
	else \
	  cargo bench --workspace --bench '*'; \
	fi
	@echo "results: $$(ls target/bench/*.json | tr '\n' ' ')"

lint: toolchain
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Stops the private Postgres/NATS this checkout started (if any) and removes their data.
clean-local:
	@if [ -f .local/nats/server.pid ]; then kill "$$(cat .local/nats/server.pid)" 2>/dev/null || true; fi
	@for d in .local/postgres /var/tmp/callflow-*-postgres; do \
	  if [ -f "$$d/postmaster.pid" ]; then \
	    ctl="$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)/pg_ctl"; \
	    if [ "$$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$$ctl -D $$d stop -m fast" || true; else "$$ctl" -D "$$d" stop -m fast || true; fi; \
	  fi; \
	done
	rm -rf .local
