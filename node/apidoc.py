"""The whole node's OpenAPI 3.1 document (SPEC-003 §3.8), without starting a node.

``python -m node.api.openapi [PATH]`` runs :func:`main` and writes it (default
``docs/openapi.json``). It lives above ``node/api/`` because it reads every feature's route
tables; the document itself is built by ``node.api.openapi``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .api.core import core_routes
from .api.openapi import document_for, openapi_routes, render
from .api.routes import RouteTable
from .features import load_features, local_api_tables

DEFAULT_OUTPUT = Path("docs/openapi.json")


def node_route_tables() -> list[RouteTable]:
    """Every table of a node's local API, core first, without starting a node (the OpenAPI
    document and the conformance tests read them)."""
    return [core_routes, openapi_routes, *local_api_tables(load_features())]


def node_document() -> dict[str, Any]:
    """The document of every route a node's local API serves."""
    return document_for(spec for table in node_route_tables() for spec in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node.api.openapi",
        description="Write the node's OpenAPI 3.1 document (SPEC-003 §3.8).",
    )
    parser.add_argument("output", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.output.write_text(render(node_document()))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
