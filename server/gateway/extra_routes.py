"""The routes that have no proto behind them, described by hand for the OpenAPI
document: health, provider callbacks, one-click unsubscribe, metrics and the
document itself with its documentation page."""

from __future__ import annotations

from typing import Any

__all__ = ["DOCS_ASSETS", "EXTRA_ROUTES", "json_content"]

# Files of swagger-ui-dist that the docs page loads.
DOCS_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
_OPEN: list[dict[str, list[str]]] = []


def json_content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


# Routes that have no proto behind them: (method, path) -> operation.
EXTRA_ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/healthz"): {
        "operationId": "Healthz",
        "summary": "Liveness: SERVING while the process runs, 503 NOT_SERVING while stopping.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {
                "description": "Serving",
                "content": json_content(
                    {
                        "type": "object",
                        "properties": {"status": {"type": "string", "enum": ["SERVING"]}},
                        "required": ["status"],
                    }
                ),
            },
            "503": {"description": "Not serving"},
        },
    },
    ("HEAD", "/healthz"): {
        "operationId": "HealthzHead",
        "summary": "Liveness without a body.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {"200": {"description": "Serving"}, "503": {"description": "Not serving"}},
    },
    ("GET", "/readyz"): {
        "operationId": "Readyz",
        "summary": "Readiness: 503 NOT_SERVING while the database is unreachable or stopping.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {
                "description": "Ready for traffic",
                "content": json_content(
                    {
                        "type": "object",
                        "properties": {"status": {"type": "string", "enum": ["SERVING"]}},
                        "required": ["status"],
                    }
                ),
            },
            "503": {"description": "Not ready: send traffic elsewhere"},
        },
    },
    ("HEAD", "/readyz"): {
        "operationId": "ReadyzHead",
        "summary": "Readiness without a body.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
    },
    ("GET", "/callbacks/{channel_id}"): {
        "operationId": "ProviderCallbackGet",
        "summary": "Provider verification handshakes (e.g. WhatsApp hub.challenge).",
        "description": "Called by messaging providers, not by API clients; the channel's "
        "adapter checks the provider's own signature or verify token.",
        "tags": ["Provider callbacks"],
        "security": _OPEN,
        "parameters": [
            {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "Accepted by the channel's adapter"},
            "403": {"description": "Signature or token refused"},
            "404": {"description": "No such channel, or it takes no callbacks"},
        },
    },
    ("POST", "/callbacks/{channel_id}"): {
        "operationId": "ProviderCallbackPost",
        "summary": "Provider delivery receipts and inbound messages.",
        "description": "Called by messaging providers, not by API clients; the body is the "
        "provider's own format.",
        "tags": ["Provider callbacks"],
        "security": _OPEN,
        "parameters": [
            {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {"content": {"*/*": {"schema": {}}}},
        "responses": {
            "200": {"description": "Accepted by the channel's adapter"},
            "403": {"description": "Signature refused"},
            "404": {"description": "No such channel, or it takes no callbacks"},
        },
    },
    ("GET", "/unsubscribe/{token}"): {
        "operationId": "UnsubscribePage",
        "summary": "The page an email's unsubscribe link opens; it changes nothing.",
        "description": "Link scanners follow GETs, so only the POST unsubscribes.",
        "tags": ["Consent"],
        "security": _OPEN,
        "parameters": [
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {"200": {"description": "A page whose button makes the POST"}},
    },
    ("POST", "/unsubscribe/{token}"): {
        "operationId": "UnsubscribeOneClick",
        "summary": "RFC 8058 one-click unsubscribe: records the opt-out the signed token names.",
        "description": "Called by mail clients with List-Unsubscribe=One-Click; the token, "
        "signed by the hub, is the only credential.",
        "tags": ["Consent"],
        "security": _OPEN,
        "parameters": [
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {"content": {"*/*": {"schema": {}}}},
        "responses": {
            "200": {"description": "Opted out"},
            "403": {"description": "Not a token this hub signed"},
        },
    },
    ("GET", "/metrics"): {
        "operationId": "Metrics",
        "summary": "Prometheus metrics of this replica, in the text exposition format.",
        "description": "Open unless the hub is started with CIMHUB_METRICS_TOKEN; then it "
        "wants `Authorization: Bearer <token>` (that token, not an API key or JWT).",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {"description": "Metrics", "content": {"text/plain": {"schema": {}}}},
            "401": {"description": "CIMHUB_METRICS_TOKEN is set and was not presented"},
        },
    },
    ("GET", "/openapi.json"): {
        "operationId": "OpenApi",
        "summary": "This document.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {"description": "OpenAPI 3.1", "content": json_content({"type": "object"})}
        },
    },
    ("GET", "/docs"): {
        "operationId": "Docs",
        "summary": "Interactive API documentation (Swagger UI) for this document.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {"description": "HTML page", "content": {"text/html": {"schema": {}}}},
            "503": {"description": "Documentation assets are not installed"},
        },
    },
    ("GET", "/docs/{asset}"): {
        "operationId": "DocsAsset",
        "summary": "A static file of the documentation page.",
        "tags": ["Operations"],
        "security": _OPEN,
        "parameters": [
            {
                "name": "asset",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(DOCS_ASSETS)},
            }
        ],
        "responses": {
            "200": {"description": "The file", "content": {"*/*": {"schema": {}}}},
            "404": {"description": "Not one of the page's files"},
            "503": {"description": "Documentation assets are not installed"},
        },
    },
}
