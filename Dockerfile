# CIM Hub server image: gRPC on 50051, HTTP/JSON façade (incl. /healthz) on 8080.
# Base images are pinned by version in tools/versions.env (tests/test_lock.py
# checks that the FROM lines agree); Python packages come from uv.lock.

# Swagger UI for /docs comes from npm at build time, never from a CDN at run time.
FROM node:20.20.2-bookworm-slim AS docs
WORKDIR /docs
COPY tools/node/package.json tools/node/package-lock.json ./
RUN npm ci --ignore-scripts --no-fund --no-audit --omit=optional

FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/cimhub

WORKDIR /app

# uv itself, by hash; then the runtime packages from the lock (no test or dev
# extras), before the code so that code edits reuse this layer.
COPY tools/uv-requirements.txt tools/
RUN pip install --no-deps --require-hashes -r tools/uv-requirements.txt
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-install-project --no-dev

COPY . .
RUN uv sync --frozen --no-dev --no-editable \
 && useradd --system --create-home --home-dir /var/lib/cimhub cimhub \
 && mkdir -p /app/var && chown cimhub:cimhub /app/var

COPY --from=docs /docs/node_modules/swagger-ui-dist /opt/swagger-ui
ENV CIMHUB_DOCS_ASSETS=/opt/swagger-ui \
    PATH=/opt/cimhub/bin:$PATH

USER cimhub
EXPOSE 50051 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

CMD ["cimhub", "serve"]
