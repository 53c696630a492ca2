# CIM Hub developer entry points. `make test` is what CI runs (via .ci/run).
#
# Every Python package comes from uv.lock (exact versions, hashes), every node
# tool from tools/node/package-lock.json, and the system services' versions from
# tools/versions.env. Nothing here resolves versions afresh except `make lock`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

include tools/versions.env

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
# uv installs from uv.lock; it is itself installed by pip from a hashed file.
UV_DIR      := .build/uv
UV          := $(UV_DIR)/bin/uv
EXTRAS      := --extra test --extra dev --extra bench
export UV_PYTHON_DOWNLOADS := never
# Compile .pyc at install time: with PYTHONDONTWRITEBYTECODE set (as on CI
# machines) every subprocess the tests start would otherwise recompile grpc,
# sqlalchemy and aiohttp from source.
export UV_COMPILE_BYTECODE := 1
export UV_PROJECT_ENVIRONMENT := $(VENV)
# buf and swagger-ui-dist (served at /docs), from npm with `npm ci`.
NODE_DIR    := tools/node
BUF         := $(NODE_DIR)/node_modules/.bin/buf
NODE_STAMP  := $(NODE_DIR)/node_modules/.installed
VENDORED    := .build/protos/google/api/annotations.proto
PG_BINDIR   := /usr/lib/postgresql/$(PG_MAJOR)/bin
PYTEST_ARGS ?= -q -n auto --dist worksteal

# Run apt-get through sudo when we are not root (and sudo exists).
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

.PHONY: help test-asyncio-debug venv uv lock lock-upgrade lock-check node-tools buf docs-assets gen \
        vendor-protos check-generated lint system-deps check-prometheus test run bench bench-profile clean

help:
	@echo "make venv             .venv from uv.lock (runtime, test, dev and bench extras)"
	@echo "make lock             update uv.lock after editing pyproject.toml (keeps other pins)"
	@echo "make lock-upgrade     move uv.lock to the newest releases pyproject allows"
	@echo "                      (PACKAGE=name moves only that one)"
	@echo "make node-tools       buf and swagger-ui-dist from tools/node/package-lock.json"
	@echo "make gen              regenerate generated/ from proto/ (scripts/gen_protos.py)"
	@echo "make check-generated  fail if generated/ is not what proto/ and uv.lock produce"
	@echo "make lint             ruff, ruff format, import-linter, buf lint/format, mypy"
	@echo "make system-deps      install redis-server, postgresql-$(PG_MAJOR), prometheus with apt if missing"
	@echo "make check-prometheus promtool on deploy/prometheus (scrape config, alert rules)"
	@echo "make test-asyncio-debug  the suite in asyncio debug mode (lost task errors name their origin)"
	@echo "make test             everything CI runs: lock check, check-generated, lint, pytest"
	@echo "make run              start the hub locally (SQLite under ./var/)"
	@echo "make bench            run bench/run.py"
	@echo "make bench-profile    flame graphs of the hub during P1 and P2 (PROFILE_LABEL=name)"
	@echo "make clean            remove .venv, .build, node_modules and caches (keeps ./var/)"

# ---------------------------------------------------------------- environments
uv: $(UV)

$(UV): tools/uv-requirements.txt
	@rm -rf $(UV_DIR)
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/pip install -q --disable-pip-version-check --no-deps --require-hashes \
	  -r tools/uv-requirements.txt
	@touch $@

# uv answers from the lock and pyproject's metadata; a disagreement is an
# error that says what to do rather than a silent re-resolve.
lock-check: $(UV)
	@if ! $(UV) lock --check --quiet 2>/tmp/cimhub-lock-check.$$$$; then \
	  cat /tmp/cimhub-lock-check.$$$$ >&2; rm -f /tmp/cimhub-lock-check.$$$$; \
	  echo "ERROR: uv.lock does not match pyproject.toml." >&2; \
	  echo "  pyproject.toml's dependencies changed without the lock. Run 'make lock'" >&2; \
	  echo "  and commit pyproject.toml and uv.lock together (README, 'Dependencies')." >&2; \
	  exit 1; \
	fi; rm -f /tmp/cimhub-lock-check.$$$$

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	@$(MAKE) --no-print-directory lock-check
	$(UV) sync --frozen $(EXTRAS) --python $(PYTHON)
	@touch $@

lock: $(UV)
	$(UV) lock
	@$(MAKE) --no-print-directory venv

lock-upgrade: $(UV)
	$(UV) lock $(if $(PACKAGE),--upgrade-package $(PACKAGE),--upgrade)
	@$(MAKE) --no-print-directory venv

node-tools: $(NODE_STAMP)
buf docs-assets: node-tools

# --ignore-scripts: buf runs through its JS launcher, and nothing else needs a hook.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --ignore-scripts --no-fund --no-audit
	@$(BUF) --version
	@touch $@

# ------------------------------------------------------------------ generation
gen: venv
	$(PY) scripts/gen_protos.py

# buf resolves google/api and google/rpc imports from .build/protos, which
# gen_protos.py fills; vendor them without touching generated/ when missing.
vendor-protos: $(VENDORED)

$(VENDORED): | $(VENV)/.installed
	$(PY) -c 'import sys; sys.path.insert(0, "scripts"); import gen_protos; gen_protos.vendor_google_protos()'

# Generates into a scratch folder and compares byte for byte; on a difference
# it names what changed since generated/ was written: proto/ or the generator's
# versions in uv.lock.
check-generated: venv
	$(PY) scripts/gen_protos.py --check

# ------------------------------------------------------------------------ lint
# Every checker runs even if an earlier one fails; the target fails if any did.
lint: venv node-tools vendor-protos
	@failed=""; \
	run() { echo "+ $$*"; "$$@" || failed="$$failed\n  $$*"; }; \
	run $(PY) -m ruff check .; \
	run $(PY) -m ruff format --check .; \
	run $(VENV)/bin/lint-imports; \
	run $(BUF) lint; \
	run $(BUF) format --exit-code -d proto; \
	run $(PY) -m mypy; \
	if [ -n "$$failed" ]; then echo -e "lint FAILED:$$failed" >&2; exit 1; fi; \
	echo "lint OK"

# ------------------------------------------------------------ system services
system-deps:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  echo "installing redis-server"; \
	  $(APT_INSTALL) redis-server || { $(SUDO) apt-get update -q && $(APT_INSTALL) redis-server; }; \
	fi
	@if [ ! -x $(PG_BINDIR)/initdb ]; then \
	  echo "installing postgresql-$(PG_MAJOR)"; \
	  $(APT_INSTALL) postgresql-$(PG_MAJOR) || { $(SUDO) apt-get update -q && $(APT_INSTALL) postgresql-$(PG_MAJOR); }; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then \
	  echo "creating the postgres system user (initdb refuses to run as root)"; \
	  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres; \
	fi
	@# promtool and the Prometheus server, for the metrics tests. Debian's
	@# package also registers a service; the tests start their own server.
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then \
	  echo "installing prometheus"; \
	  $(APT_INSTALL) prometheus || { $(SUDO) apt-get update -q && $(APT_INSTALL) prometheus; }; \
	fi
	@redis-server --version; $(PG_BINDIR)/postgres --version; promtool --version | head -1
	@promtool --version | grep -q "version $(PROMETHEUS_VERSION)[+ ]" || { \
	  echo "ERROR: promtool is not Prometheus $(PROMETHEUS_VERSION) (tools/versions.env)" >&2; exit 1; }
	@redis-server --version | grep -q " v=$(REDIS_MAJOR)\." || { \
	  echo "ERROR: redis-server is not Redis $(REDIS_MAJOR) (tools/versions.env)" >&2; exit 1; }

# ------------------------------------------------------------------------ test
check-prometheus:
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/alerts.yml

# promtool check metrics runs in pytest, on a scrape of a running hub.
test: lock-check venv node-tools system-deps
	@$(MAKE) --no-print-directory check-generated
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory check-prometheus
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite again with asyncio's debug mode: every task remembers where it was
# made, so a task whose exception nobody retrieved fails its test (tests/conftest.py)
# with the line that created it. About twice as slow; the two tracemalloc tests
# are left out, as tracing on top of debug mode takes them past ten minutes.
test-asyncio-debug: venv node-tools system-deps
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

# ------------------------------------------------------------------------- run
run: venv node-tools
	@mkdir -p var
	$(PY) -m server serve

# BENCH_ARGS passes flags through, e.g. make bench BENCH_ARGS="--quick" or "--db postgresql".
BENCH_ARGS ?=
bench: venv
	$(PY) bench/run.py $(BENCH_ARGS)

# Flame graphs of the hub during P1 and P2 (py-spy from the lock), written to
# bench/results/profiles/$(PROFILE_LABEL)/: <id>.svg, <id>.folded, <id>.txt.
PROFILE_LABEL ?= latest
bench-profile: venv
	$(PY) bench/run.py --only P1,P2 --runs 1 --profile \
	  --profile-dir bench/results/profiles/$(PROFILE_LABEL) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .build $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache \
	  .hypothesis *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
