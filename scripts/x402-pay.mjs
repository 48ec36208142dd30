#!/usr/bin/env node
// Pays one SecureExec call with the official x402 TypeScript client (@x402/fetch and @x402/evm
// 2.27.0, pinned in package.json), unmodified: the interop check for the gateway's x402 rail.
//
//   node scripts/x402-pay.mjs <gateway-url> <private-key> <asset> [network] [max-atomic]
//
// gateway-url  base URL of the gateway, e.g. http://127.0.0.1:5091 (POST <url>/exec/tool)
// private-key  0x-prefixed payer key (a public test key on a dev chain; never a real one here)
// asset        the EIP-3009 token the gateway offers (X402_TOKEN_ADDRESS)
// network      CAIP-2 network of the offer [eip155:31337]
// max-atomic   spend cap for this asset, in atomic units [1000000 = 1 USDC]
//
// Prints one JSON line, {"status":…,"body":…,"paymentResponse":…}, where paymentResponse is the
// decoded PAYMENT-RESPONSE header (null when absent). Exits 0 only on HTTP 200.
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const TIMEOUT_MS = 30_000; // the whole exchange: 402, signing, paid retry
const MAX_BODY_BYTES = 1 << 20;

function usage(msg) {
  process.stderr.write(`x402-pay: ${msg}\nusage: node scripts/x402-pay.mjs <gateway-url> <private-key> <asset> [network] [max-atomic]\n`);
  process.exit(2);
}

const [url, key, asset, network = "eip155:31337", maxAtomic = "1000000"] = process.argv.slice(2);
if (!url || !key || !asset) usage("missing arguments");
let base;
try {
  base = new URL(url);
} catch {
  usage(`gateway-url ${JSON.stringify(url)} is not a URL`);
}
if (base.protocol !== "http:" && base.protocol !== "https:") usage("gateway-url must be http(s)");
if (!/^0x[0-9a-fA-F]{64}$/.test(key)) usage("private-key must be 0x and 64 hex digits");
if (!/^0x[0-9a-fA-F]{40}$/.test(asset)) usage("asset must be a 0x-prefixed 20-byte address");
if (!/^eip155:\d+$/.test(network)) usage("network must be eip155:<chain id>");
if (!/^[1-9]\d*$/.test(maxAtomic)) usage("max-atomic must be a positive integer");

const client = new x402Client();
// No `networks`: eip155:* for v2 (and the v1 names), as x402.md §11.4 describes.
registerExactEvmScheme(client, { signer: privateKeyToAccount(key) });
// Spend controls (default on since @x402/core 2.23.0) allow only the known USDC deployments;
// a dev-chain token must be listed, here with an atomic per-payment cap (x402.md §11.3).
client.setSpendControls({ allowedAssets: [{ network, asset, maxAmountPerPayment: maxAtomic }] });
const fetchWithPayment = wrapFetchWithPayment(fetch, client);

const endpoint = new URL("exec/tool", base.href.endsWith("/") ? base.href : base.href + "/");
let res, text;
try {
  res = await fetchWithPayment(endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ agentId: "x402-ts-interop", tool: { name: "json_parse", args: { data: { paidBy: "@x402/fetch" } } } }),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  text = await res.text();
} catch (err) {
  // The client refused to pay (spend controls, an offer it cannot read) or the exchange failed.
  process.stderr.write(`x402-pay: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
if (text.length > MAX_BODY_BYTES) {
  process.stderr.write(`x402-pay: response body of ${text.length} characters exceeds ${MAX_BODY_BYTES}\n`);
  process.exit(1);
}
let body;
try {
  body = JSON.parse(text);
} catch {
  body = text;
}
const header = res.headers.get("PAYMENT-RESPONSE") ?? res.headers.get("X-PAYMENT-RESPONSE");
const paymentResponse = header ? decodePaymentResponseHeader(header) : null;
process.stdout.write(JSON.stringify({ status: res.status, body, paymentResponse }) + "\n");
process.exit(res.status === 200 ? 0 : 1);
