"""maia-node's Model Context Protocol server (SPEC-004 §15): memory, journal, sessions, leases
and models as MCP tools and resources, for agent CLIs (``maia mcp``, stdio) and for any MCP client
over the local API (``/v1/mcp``, streamable HTTP). Every tool is one call to the node's HTTP API
with the caller's own session credential, so MCP reaches exactly what the routes allow."""
