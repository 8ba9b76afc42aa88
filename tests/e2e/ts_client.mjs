// The official TypeScript SDK client (@modelcontextprotocol/sdk, pinned in package.json) against an MCP endpoint.
//
//   node ts_client.mjs URL token                          # MCPGW_TOKEN: a bearer token, sent as a fixed header
//   node ts_client.mjs URL client-credentials ISSUER      # MCPGW_CLIENT_ID, MCPGW_CLIENT_SECRET (MCPGW_SCOPE
//                                                         # optional): the full OAuth flow, 401 -> RFC 9728
//                                                         # metadata -> RFC 8414 metadata -> token -> retry
//
// Connects (initialize), lists tools, calls `echo`, then ends the session (DELETE), and prints one JSON object
// on stdout: what the server answered and every HTTP exchange the SDK made (method, URL, status, challenge;
// for token requests the grant, scope and resource asked for, never the credentials). Secrets come from the
// environment so that they never appear in a process list. On failure the object carries `error` instead of
// the results, and the exit status is 1.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";

const [url, mode, issuer] = process.argv.slice(2);
const ECHO_MESSAGE = "hello from the TypeScript SDK";
const exchanges = [];

// Records each exchange; the SDK uses this fetch for MCP requests and for every OAuth step alike.
async function recordingFetch(input, init = {}) {
  const target = new URL(input instanceof Request ? input.url : String(input));
  const entry = { method: (init.method ?? "GET").toUpperCase(), url: target.href };
  if (init.body instanceof URLSearchParams) {
    // A token request: the grant, scope and resource it asked for (client authentication is in a header).
    entry.form = Object.fromEntries(["grant_type", "scope", "resource"].map((k) => [k, init.body.get(k)]));
  } else if (typeof init.body === "string") {
    try {
      entry.rpc = JSON.parse(init.body).method ?? "response";
    } catch {
      entry.rpc = null;
    }
  }
  exchanges.push(entry);
  const response = await fetch(input, init);
  entry.status = response.status;
  const challenge = response.headers.get("www-authenticate");
  if (challenge) entry.challenge = challenge;
  return response;
}

function transportOptions() {
  if (mode === "token") {
    const token = process.env.MCPGW_TOKEN;
    if (!token) throw new Error("MCPGW_TOKEN is not set");
    return { requestInit: { headers: { Authorization: `Bearer ${token}` } } };
  }
  if (mode === "client-credentials") {
    const clientId = process.env.MCPGW_CLIENT_ID;
    const clientSecret = process.env.MCPGW_CLIENT_SECRET;
    if (!clientId || !clientSecret || !issuer) throw new Error("need ISSUER, MCPGW_CLIENT_ID and MCPGW_CLIENT_SECRET");
    const scope = process.env.MCPGW_SCOPE || undefined;
    return { authProvider: new ClientCredentialsProvider({ clientId, clientSecret, expectedIssuer: issuer, scope }) };
  }
  throw new Error(`unknown mode ${mode}: use token or client-credentials`);
}

async function main() {
  const transport = new StreamableHTTPClientTransport(new URL(url), { ...transportOptions(), fetch: recordingFetch });
  const client = new Client({ name: "mcp-gateway-ts-e2e", version: "1.0.0" });
  await client.connect(transport);
  const sessionId = transport.sessionId;
  const tools = await client.listTools();
  const echo = await client.callTool({ name: "echo", arguments: { message: ECHO_MESSAGE } });
  await transport.terminateSession();
  await client.close();
  return {
    protocolVersion: transport.protocolVersion ?? null,
    serverInfo: client.getServerVersion() ?? null,
    sessionId: sessionId ?? null,
    sessionIdAfterTermination: transport.sessionId ?? null,
    tools: tools.tools.map((tool) => tool.name),
    echo,
    exchanges,
  };
}

try {
  process.stdout.write(JSON.stringify(await main()) + "\n");
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error?.message ?? error), exchanges }) + "\n");
  process.stderr.write(`${error?.stack ?? error}\n`);
  process.exit(1); // an open SSE stream would otherwise keep the process alive
}
