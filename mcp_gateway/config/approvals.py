"""`[servers.NAME.approvals]`: which tools wait for a person's approval, who may give it, for how long."""

from __future__ import annotations

from pydantic import BaseModel, Field

from mcp_gateway.config.common import FROZEN, Scope


class ApprovalRule(BaseModel):
    """`TOOL = { approver_scope = "…", timeout_seconds = 300 }`: a call of TOOL is held until someone whose
    token (same issuer, another `sub`) carries `approver_scope` approves it, or the timeout refuses it."""

    model_config = FROZEN

    approver_scope: Scope
    timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
