"""``/v1/mcp`` (SPEC-003 §6.8): the table lives in ``node/mcp/http.py``; named here so the route
inventory, the OpenAPI document and the conformance walk (which read ``routes_*``) see it."""

from ..mcp.http import mcp_routes

__all__ = ["mcp_routes"]
