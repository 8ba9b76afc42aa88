"""People in the loop: tool calls held until a person approves the exact call, and a console for approvers
and auditors.

A call of a tool listed in `[servers.NAME.approvals]` is not forwarded: the gateway records an
`approval_requested` event and holds the call in this process's memory (`ledger.py`). A person whose token
carries the tool's `approver_scope` (same issuer, another `sub`) decides it through `POST /approvals/{id}`,
`mcp-gateway approvals approve|deny ID` or the console at `/console`. An approval is bound to exactly one
held call (principal, server, tool, arguments digest), counts once, and only before it expires.

Held calls live in memory: a restart or shutdown refuses them (the client gets a clean JSON-RPC error),
and with several worker processes an approval must reach the process holding the call (run approvals on
one worker, or route `/approvals` with the MCP traffic of the same client).
"""
