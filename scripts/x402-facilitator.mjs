#!/usr/bin/env node
// The official x402 facilitator (@x402/core's x402Facilitator with @x402/evm's exact scheme,
// 2.27.0, pinned in package.json), unmodified, served over HTTP on 127.0.0.1: the remote
// facilitator the gateway's X402_FACILITATOR_URL mode is tested against.
//
//   node scripts/x402-facilitator.mjs <rpc-url> <private-key> <chain-id> [port]
//
// rpc-url      JSON-RPC of the chain (anvil on 127.0.0.1 in the tests)
// private-key  0x-prefixed key that sends transferWithAuthorization (a public test key)
// chain-id     the chain's id; the facilitator settles eip155:<chain-id>
// port         TCP port on 127.0.0.1 [0: any free port]
//
// Serves POST /verify, POST /settle, GET /supported and GET /health (x402.md §8). Prints one
// line, {"url":"http://127.0.0.1:<port>"}, once listening; stops on SIGTERM or SIGINT.
import http from "node:http";
import { x402Facilitator } from "@x402/core/facilitator";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { createWalletClient, defineChain, http as viemHTTP, publicActions } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const MAX_BODY_BYTES = 64 << 10;
const CONFIRMATION_TIMEOUT_MS = 30_000;

function usage(msg) {
  process.stderr.write(`x402-facilitator: ${msg}\nusage: node scripts/x402-facilitator.mjs <rpc-url> <private-key> <chain-id> [port]\n`);
  process.exit(2);
}

const [rpc, key, chainIdArg, portArg = "0"] = process.argv.slice(2);
if (!rpc || !key || !chainIdArg) usage("missing arguments");
if (!/^0x[0-9a-fA-F]{64}$/.test(key)) usage("private-key must be 0x and 64 hex digits");
if (!/^[1-9]\d*$/.test(chainIdArg)) usage("chain-id must be a positive integer");
if (!/^\d+$/.test(portArg) || Number(portArg) > 65535) usage("port must be 0..65535");
const chainId = Number(chainIdArg);
const network = `eip155:${chainId}`;

const account = privateKeyToAccount(key);
const chain = defineChain({
  id: chainId,
  name: `local-${chainId}`,
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [rpc] } },
});
const wallet = createWalletClient({ account, chain, transport: viemHTTP(rpc) }).extend(publicActions);
const signer = toFacilitatorEvmSigner({ ...wallet, address: account.address }, { confirmationTimeoutMs: CONFIRMATION_TIMEOUT_MS });

const facilitator = new x402Facilitator();
registerExactEvmScheme(facilitator, { signer, networks: network });

function send(res, status, body) {
  const json = JSON.stringify(body, (_, v) => (typeof v === "bigint" ? v.toString() : v));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(json) });
  res.end(json);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on("data", (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error("body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === "GET" && req.url === "/supported") return send(res, 200, facilitator.getSupported());
    if (req.method === "GET" && req.url === "/health") return send(res, 200, { status: "ok" });
    if (req.method !== "POST" || (req.url !== "/verify" && req.url !== "/settle")) return send(res, 404, { error: "not found" });
    let body;
    try {
      body = JSON.parse(await readBody(req));
    } catch (e) {
      return send(res, 400, { error: `invalid JSON: ${e.message}` });
    }
    const { paymentPayload, paymentRequirements } = body ?? {};
    if (!paymentPayload || !paymentRequirements) return send(res, 400, { error: "paymentPayload and paymentRequirements are required" });
    if (req.url === "/verify") return send(res, 200, await facilitator.verify(paymentPayload, paymentRequirements));
    return send(res, 200, await facilitator.settle(paymentPayload, paymentRequirements));
  } catch (e) {
    process.stderr.write(`x402-facilitator: ${req.method} ${req.url}: ${e?.stack ?? e}\n`);
    // The SDK throws VerifyError / SettleError carrying the reason; pass it on as the protocol does.
    if (e && typeof e === "object" && ("invalidReason" in e || "errorReason" in e)) {
      if (req.url === "/verify") return send(res, 400, { isValid: false, invalidReason: e.invalidReason, invalidMessage: e.invalidMessage, payer: e.payer });
      return send(res, 400, { success: false, errorReason: e.errorReason, errorMessage: e.errorMessage, transaction: e.transaction ?? "", network, payer: e.payer });
    }
    return send(res, 500, { error: String(e?.message ?? e) });
  }
});

server.listen(Number(portArg), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}`, signer: account.address, network }) + "\n");
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));
