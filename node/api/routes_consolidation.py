"""Consolidation, pin and skill routes live in ``node/consolidation/routes.py`` (SPEC-006 §12);
this name lists their table among the API's for the OpenAPI document (SPEC-003 §3.8)."""

from __future__ import annotations

from ..consolidation.routes import consolidation_routes

__all__ = ["consolidation_routes"]
