"""The MCP streamable-HTTP proxy: classification, sessions, forwarding and relaying."""
