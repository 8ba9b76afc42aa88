// The mcp-gateway console: pending approvals and the audit log. Every value shown comes from requests that
// agents and upstreams influence, so it is written with textContent only (never parsed as HTML), and control and
// format characters (ANSI escapes, bidi overrides) are shown as visible \uXXXX escapes.
"use strict";

(() => {
  let token = null; // this tab's memory only: no storage, no cookie
  let pendingTimer = null;
  const byId = (id) => document.getElementById(id);
  const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g;
  const AUDIT_FIELDS = [
    "timestamp", "event_id", "event_type", "agent_id", "delegating_user", "session_id", "mcp_server", "method",
    "tool", "scope_granted", "scopes_required", "token_ttl", "token_id", "request_context", "decision",
    "policy_rule", "outcome", "http_status", "latency_ms", "arguments_sha256", "arguments", "approval",
    "policy_version", "client_address", "upstream_identity", "detail", "upstream_credential", "shadow_decision",
  ];

  function visible(value) {
    if (value === null || value === undefined) return "";
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text.replace(UNSAFE, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = visible(text);
    if (className) node.className = className;
    return node;
  }

  function say(id, text, kind) {
    const node = byId(id);
    node.textContent = visible(text);
    node.className = "status" + (kind ? " " + kind : "");
  }

  function fields(pairs) {
    const list = document.createElement("dl");
    for (const [name, value] of pairs) {
      list.append(element("dt", name), element("dd", value));
    }
    return list;
  }

  function when(epoch) {
    return typeof epoch === "number" ? new Date(epoch * 1000).toISOString() : "";
  }

  async function api(path, options = {}) {
    if (!token) throw new Error("Paste a token first.");
    const headers = Object.assign({}, options.headers || {}, { Authorization: "Bearer " + token });
    const response = await fetch(path, Object.assign({}, options, { headers, credentials: "omit", cache: "no-store" }));
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.message === "string" ? body.message : "HTTP " + response.status;
      throw new Error(message + " (HTTP " + response.status + ")");
    }
    return body;
  }

  // -- pending approvals ------------------------------------------------------------------------------

  async function loadPending() {
    const list = byId("pending-list");
    try {
      const body = await api("/approvals");
      const approvals = Array.isArray(body.approvals) ? body.approvals : [];
      list.replaceChildren(...approvals.map(renderApproval));
      say("pending-status", approvals.length + " call(s) awaiting approval; refreshed " + new Date().toISOString());
    } catch (error) {
      list.replaceChildren();
      say("pending-status", error.message, "error");
    }
  }

  function renderApproval(item) {
    const card = element("article", undefined, "approval");
    card.dataset.approvalId = String(item.id);
    card.append(element("h3", item.tool + " on " + item.server));
    card.append(
      fields([
        ["Approval id", item.id],
        ["Agent", item.agent_id],
        ["On behalf of", item.delegating_user],
        ["Arguments", item.arguments],
        ["Arguments SHA-256", item.arguments_sha256],
        ["Request context", item.request_context],
        ["Approver scope", item.approver_scope],
        ["Requested", when(item.created_at)],
        ["Expires", when(item.expires_at)],
        ["Event id", item.event_id],
      ])
    );
    const row = element("div", undefined, "decide");
    const reason = element("input");
    reason.placeholder = "Reason (recorded in the audit log)";
    reason.className = "reason";
    reason.maxLength = 1000;
    const approve = element("button", "Approve", "approve");
    const deny = element("button", "Deny", "deny");
    approve.type = deny.type = "button";
    const decide = (decision) => async () => {
      approve.disabled = deny.disabled = true;
      try {
        const body = JSON.stringify({ decision, reason: reason.value, arguments_sha256: item.arguments_sha256 });
        const answer = await api("/approvals/" + encodeURIComponent(item.id), {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body,
        });
        say("pending-status", "Recorded: " + answer.decision + " of " + item.id + " by " + answer.approver, "ok");
        card.remove();
      } catch (error) {
        say("pending-status", error.message, "error");
        approve.disabled = deny.disabled = false;
      }
    };
    approve.addEventListener("click", decide("approve"));
    deny.addEventListener("click", decide("deny"));
    row.append(reason, approve, deny);
    card.append(row);
    return card;
  }

  // -- audit log --------------------------------------------------------------------------------------

  async function loadAudit() {
    const form = byId("audit-filters");
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form).entries()) {
      if (String(value).trim()) query.set(name, String(value).trim());
    }
    const tbody = byId("audit-table").querySelector("tbody");
    byId("audit-detail").hidden = true;
    try {
      const body = await api("/audit/records?" + query.toString());
      const records = Array.isArray(body.records) ? body.records.slice().reverse() : [];
      tbody.replaceChildren(...records.map(renderRecord));
      say("audit-status", records.length + " record(s), newest first");
    } catch (error) {
      tbody.replaceChildren();
      say("audit-status", error.message, "error");
    }
    try {
      const chain = await api("/audit/verify");
      if (chain.ok) {
        say("verify-status", "Chain verified: " + chain.records + " record(s) intact" +
          (chain.head_hash ? ", head " + chain.head_seq + " " + chain.head_hash : ""), "ok");
      } else {
        say("verify-status", "CHAIN BROKEN at seq " + chain.broken_seq + ": " + chain.reason, "error");
      }
    } catch (error) {
      say("verify-status", "Chain not verified: " + error.message, "error");
    }
  }

  function renderRecord(record) {
    const row = document.createElement("tr");
    for (const name of ["timestamp", "agent_id", "delegating_user", "mcp_server", "tool", "decision", "outcome",
      "event_type", "request_context"]) {
      row.append(element("td", record[name]));
    }
    row.addEventListener("click", () => {
      for (const other of row.parentNode.children) other.classList.remove("selected");
      row.classList.add("selected");
      byId("audit-fields").replaceWith(Object.assign(fields(AUDIT_FIELDS.map((n) => [n, record[n]])), { id: "audit-fields" }));
      byId("audit-detail").hidden = false;
    });
    return row;
  }

  // -- tabs and token ---------------------------------------------------------------------------------

  function show(tab) {
    for (const name of ["pending", "audit"]) {
      byId("tab-" + name).setAttribute("aria-selected", String(name === tab));
      byId("panel-" + name).hidden = name !== tab;
    }
    if (!token) return;
    if (tab === "pending") loadPending();
    else loadAudit();
  }

  function current() {
    return byId("tab-audit").getAttribute("aria-selected") === "true" ? "audit" : "pending";
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = byId("token");
      token = input.value.trim() || null;
      input.value = "";
      say("token-status", token ? "Token in use (this tab's memory only)." : "No token.");
      clearInterval(pendingTimer);
      if (token) pendingTimer = setInterval(() => { if (current() === "pending") loadPending(); }, 5000);
      show(current());
    });
    byId("token-forget").addEventListener("click", () => {
      token = null;
      clearInterval(pendingTimer);
      say("token-status", "Token forgotten.");
      byId("pending-list").replaceChildren();
      byId("audit-table").querySelector("tbody").replaceChildren();
    });
    byId("tab-pending").addEventListener("click", () => show("pending"));
    byId("tab-audit").addEventListener("click", () => show("audit"));
    byId("pending-refresh").addEventListener("click", loadPending);
    byId("audit-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      loadAudit();
    });
  });
})();
