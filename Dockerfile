# CIM Hub server image: gRPC on 50051, HTTP/JSON façade (incl. /healthz) on 8080.

# Swagger UI for /docs comes from npm at build time, never from a CDN at run time.
FROM node:20-slim AS docs
RUN npm install --prefix /docs --no-fund --no-audit swagger-ui-dist@5.35.0

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (metadata only) so code edits reuse the cached layer.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
 && useradd --system --create-home --home-dir /var/lib/cimhub cimhub \
 && mkdir -p /app/var && chown cimhub:cimhub /app/var

COPY --from=docs /docs/node_modules/swagger-ui-dist /opt/swagger-ui
ENV CIMHUB_DOCS_ASSETS=/opt/swagger-ui

USER cimhub
EXPOSE 50051 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

CMD ["cimhub", "serve"]
