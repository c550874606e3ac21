"""Memory search routes, defined in node/search/routes.py; named here so the OpenAPI document
and the conformance walk, which read every ``node.api.routes_*`` module, cover them."""

from ..search.routes import search_routes

__all__ = ["search_routes"]
