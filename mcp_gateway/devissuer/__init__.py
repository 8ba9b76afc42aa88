"""The development token issuer: DEVELOPMENT ONLY, NOT FOR PRODUCTION.

A small OAuth 2.1 authorization server (client_credentials only) that `mcp-gateway demo`, the
benchmarks and the tests use to mint tokens, with `mcp-gateway issuer` and `mcp-gateway token`. It
keeps client secrets in a TOML file, has no user login, consent, revocation or key rotation, and is
not meant to face a network. Put the gateway behind a real authorization server in production. Only the CLI and
`mcp-gateway demo` import this package; the production token verifiers are in `mcp_gateway.auth`.
"""
