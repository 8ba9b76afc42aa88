"""Upstream identity: what makes an upstream the one the admin allowlisted.

`tls_pins` (the SHA-256 of the certificate's key, checked at the TLS handshake), `tool_pins` (the
SHA-256 of each tool definition, checked on every listing), `confusables` (allowlist entries whose
names or hosts could be mistaken for each other) and `cli` (`mcp-gateway allowlist check|pin`, which
records what a live upstream presents). The connection pool that applies the TLS pin is in `upstream/`.
"""
