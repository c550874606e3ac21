"""What the HTTP API needs from the rest of the node.

The API layer depends on this protocol only, never on the node's internals,
so routes stay thin and tests can serve the real HTTP stack over a fake node.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web


class NodeServices(Protocol):
    """The node operations the core routes expose."""

    async def status(self) -> dict[str, Any]:
        """A JSON-serialisable summary of the node's state."""
        ...

    async def get_profile(self) -> dict[str, Any]:
        """The owner's profile as stored in the identity document."""
        ...

    async def update_profile(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply already-validated ``changes`` and return the resulting profile."""
        ...


SERVICES_KEY: web.AppKey[NodeServices] = web.AppKey("maia_services", NodeServices)
