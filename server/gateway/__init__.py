"""REST façade over the cim.v1 gRPC services, driven by their HTTP annotations."""

from __future__ import annotations

from .app import create_app, route_table
from .jsonmap import JsonMappingError, parse, to_json
from .routes import PathParam, Route, build_routes

__all__ = [
    "JsonMappingError",
    "PathParam",
    "Route",
    "build_routes",
    "create_app",
    "parse",
    "route_table",
    "to_json",
]
