# CIM Hub developer entry points. `make test` is what CI runs (via .ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
BUF_VERSION := 1.75.0
NODE_PREFIX := .build/node
BUF         := $(NODE_PREFIX)/node_modules/.bin/buf
BUF_STAMP   := $(NODE_PREFIX)/.buf-$(BUF_VERSION)
# Swagger UI for /docs, from npm into its own prefix (installing into the buf
# prefix with --no-save would prune buf).
SWAGGER_UI_VERSION := 5.35.0
DOCS_PREFIX := .build/docs
DOCS_STAMP  := $(DOCS_PREFIX)/.swagger-ui-$(SWAGGER_UI_VERSION)
VENDORED    := .build/protos/google/api/annotations.proto
PG_BINDIR   := /usr/lib/postgresql/15/bin
PYTEST_ARGS ?= -q

# Run apt-get through sudo when we are not root (and sudo exists).
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends

.PHONY: help venv buf docs-assets gen vendor-protos check-generated lint system-deps test run bench clean

help:
	@echo "make venv             create .venv and install the project with [test,dev] extras"
	@echo "make buf              install buf $(BUF_VERSION) into $(NODE_PREFIX) via npm"
	@echo "make docs-assets      install swagger-ui-dist $(SWAGGER_UI_VERSION) for /docs via npm"
	@echo "make gen              regenerate generated/ from proto/ (scripts/gen_protos.py)"
	@echo "make check-generated  regenerate and fail if generated/ differs from git"
	@echo "make lint             ruff, ruff format, import-linter, buf lint/format, mypy"
	@echo "make system-deps      install redis-server / postgresql-15 with apt if missing"
	@echo "make test             everything CI runs: check-generated, lint, pytest"
	@echo "make run              start the hub locally (SQLite under ./var/)"
	@echo "make bench            run bench/run.py"
	@echo "make clean            remove .venv, .build and caches (keeps ./var/)"

# ---------------------------------------------------------------- environments
venv: $(VENV)/.installed

# Reinstalls whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $@

buf: $(BUF_STAMP)

$(BUF_STAMP):
	npm install --prefix $(NODE_PREFIX) --no-fund --no-audit --no-save @bufbuild/buf@$(BUF_VERSION)
	@$(BUF) --version
	@rm -f $(NODE_PREFIX)/.buf-* && touch $@

docs-assets: $(DOCS_STAMP)

$(DOCS_STAMP):
	npm install --prefix $(DOCS_PREFIX) --no-fund --no-audit --no-save swagger-ui-dist@$(SWAGGER_UI_VERSION)
	@rm -f $(DOCS_PREFIX)/.swagger-ui-* && touch $@

# ------------------------------------------------------------------ generation
gen: venv
	$(PY) scripts/gen_protos.py

# buf resolves google/api and google/rpc imports from .build/protos, which
# gen_protos.py fills; vendor them without touching generated/ when missing.
vendor-protos: $(VENDORED)

$(VENDORED): | $(VENV)/.installed
	$(PY) -c 'import sys; sys.path.insert(0, "scripts"); import gen_protos; gen_protos.vendor_google_protos()'

# Compared with the git index: a clean checkout must already hold exactly what
# the generator writes (staged-but-uncommitted output counts as up to date).
check-generated: gen
	@changes="$$(git status --porcelain --untracked-files=all -- generated/ | grep -v '^[MADRC] ' || true)"; \
	if [ -n "$$changes" ] || ! git diff --quiet -- generated/; then \
	  echo "ERROR: generated/ is stale: scripts/gen_protos.py produced changes:" >&2; \
	  echo "$$changes" >&2; \
	  git --no-pager diff --stat -- generated/ >&2; \
	  echo "Run 'make gen' and commit generated/ together with the proto/ change." >&2; \
	  exit 1; \
	fi
	@echo "generated/ is up to date"

# ------------------------------------------------------------------------ lint
# Every checker runs even if an earlier one fails; the target fails if any did.
lint: venv buf vendor-protos
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
	  echo "installing postgresql-15"; \
	  $(APT_INSTALL) postgresql-15 || { $(SUDO) apt-get update -q && $(APT_INSTALL) postgresql-15; }; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then \
	  echo "creating the postgres system user (initdb refuses to run as root)"; \
	  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres; \
	fi
	@redis-server --version; $(PG_BINDIR)/postgres --version

# ------------------------------------------------------------------------ test
test: venv buf docs-assets system-deps
	@$(MAKE) --no-print-directory check-generated
	@$(MAKE) --no-print-directory lint
	$(PY) -m pytest $(PYTEST_ARGS)

# ------------------------------------------------------------------------- run
run: venv docs-assets
	@mkdir -p var
	$(PY) -m server serve

# BENCH_ARGS passes flags through, e.g. make bench BENCH_ARGS="--quick" or "--db postgresql".
BENCH_ARGS ?=
bench: venv
	@[ -f bench/run.py ] || { echo "bench/run.py does not exist yet" >&2; exit 1; }
	@$(PY) -c 'import matplotlib, psutil' 2>/dev/null || $(PY) -m pip install -q matplotlib psutil
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
