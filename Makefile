# cxrl — set-up, tests, demo. `make test` and `make demo` work on a fresh clone.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_SRC := $(shell find protos -name '*.proto' 2>/dev/null)
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONHASHSEED ?= 0

.PHONY: setup browser prometheus protos test test-fast lint demo bench clean images compose-env compose-check chaos-check

# The venv is rebuilt only when pyproject.toml changes (a no-op when up to date).
setup: $(STAMP) protos

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) (torch 2.14.1 wheels are for CPython 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# gRPC stubs are generated, never committed.
protos: $(STAMP)
	@if [ -n "$(PROTO_SRC)" ]; then \
	  $(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_SRC); \
	fi

# The HTML run report is checked in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium for the run-report rendering test"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium >/dev/null; }

# PYTHONFAULTHANDLER: a crash, even at interpreter exit after the last test, prints every thread's stack.
# Prometheus and promtool for the observability tests (Debian's package, like chromium above).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus (with promtool) for the observability tests"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

test: setup browser prometheus
	PYTHONFAULTHANDLER=1 $(BIN)/python -m pytest -q

# Every fast unit test: no servers, no end-to-end runs, nothing heavy, no browser (marks: pyproject.toml).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not service and not e2e and not slow and not browser"

lint: setup
	$(BIN)/ruff check cxrl services trainer tests bench deploy
	$(BIN)/ruff format --check cxrl services trainer tests bench deploy
	$(BIN)/lint-imports  # layer contracts: [tool.importlinter] in pyproject.toml

# The default world's images (built once, ~3 min on 2 cores): the real held-out images FID compares with.
WORLD := data/world
$(WORLD)/metadata.csv: | $(STAMP)
	$(BIN)/cxrl world build --out $(WORLD) --force

demo: setup $(WORLD)/metadata.csv
	$(BIN)/cxrl demo --config demo-fast-kl --out out/demo  # the efficient recipe with a KL term (trainer/configs/demo-fast-kl.yaml)

bench: setup
	$(BIN)/python -m bench.run --out out/bench

clean:
	rm -rf out .pytest_cache

# Container images and the compose stack (docs/deploy.md). `make images` gathers the pinned
# wheels into build/wheelhouse and builds cxrl/cxrl:$(IMAGE_TAG)-$(VARIANT) offline from them.
# Where Docker Hub cannot be reached: LOCAL_BASE=1 (Debian base built with debootstrap); the default,
# LOCAL_BASE=auto, takes it when Docker Hub does not answer. The scripts install the Debian host packages
# they miss (docker.io, debootstrap, a BuildKit client; as root) and stop at the first failing step.
# `make compose-check` is the pre-release check of the stack (minutes; not in `make test`).
DOCKER ?= docker
COMPOSE ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo "docker compose" || echo "$(CURDIR)/$(VENV)/lib/python3.11/site-packages/compose/docker-compose")
VARIANT ?= cpu
IMAGE_TAG ?= 0.1.0
LOCAL_BASE ?= auto
DOCKER_ENV = DOCKER="$(DOCKER)" COMPOSE="$(COMPOSE)" VARIANT=$(VARIANT) IMAGE_TAG=$(IMAGE_TAG) LOCAL_BASE=$(LOCAL_BASE)

images: setup
	$(DOCKER_ENV) deploy/docker/dockerd.sh
	$(DOCKER_ENV) deploy/docker/images.sh

compose-env:
	@mkdir -p build; test -s build/compose.env || (umask 077; printf 'CXRL_API_TOKEN=%s\nCXRL_REDIS_PASSWORD=%s\n' \
	  "$$(openssl rand -hex 32)" "$$(openssl rand -hex 32)" > build/compose.env); echo "secrets in build/compose.env"

compose-check: setup
	$(DOCKER_ENV) deploy/docker/compose-check.sh

# `make chaos-check`: the compose `cluster` profile (Ray head + 2 worker nodes) losing a worker node,
# its head and the cache Redis, and a frozen node, under scoring load and a training run (tens of
# minutes; not in `make test`; docs/reliability.md). CHAOS_ARGS: options of deploy/docker/chaos.py.
chaos-check: setup
	$(DOCKER_ENV) CHAOS_ARGS="$(CHAOS_ARGS)" deploy/docker/chaos-check.sh
