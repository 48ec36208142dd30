// Compiles contracts/src/*.sol with the pinned solc-js into contracts/artifacts/.
//
// Byte-reproducible by construction: the compiler version is checked, settings are fixed, the
// sources are listed explicitly and keyed by a repo-relative path that does not depend on where
// the checkout lives (the CBOR metadata hash at the end of the bytecode covers both), and output
// JSON is written with a fixed layout. `node contracts/build.mjs --check` compiles in memory and
// fails if the checked-in artifacts differ.
//
// Outputs per contract: <Name>.abi (JSON), <Name>.bin and <Name>.bin-runtime (hex, no 0x), plus
// combined.json in the `solc --combined-json abi,bin,bin-runtime` shape abigen understands.

import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");

const SOLC_VERSION = "0.8.28+commit.7893614a.Emscripten.clang";
const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, "artifacts");

// file (relative to contracts/) -> contract names to emit, in a fixed order.
const SOURCES = [
  ["src/TestUSDC.sol", ["TestUSDC"]],
  ["src/SettlementBatcher.sol", ["SettlementBatcher"]],
  ["src/TestWallet.sol", ["TestWallet"]],
  ["src/X402Lens.sol", ["X402Lens"]],
];

const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  viaIR: false,
  metadata: { bytecodeHash: "ipfs", appendCBOR: true },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function fail(msg) {
  console.error(`contracts: ${msg}`);
  process.exit(1);
}

if (solc.version() !== SOLC_VERSION) {
  fail(`solc-js ${solc.version()} is installed, want ${SOLC_VERSION}; run npm ci`);
}

const sources = {};
for (const [file] of SOURCES) {
  sources[file] = { content: readFileSync(join(here, file), "utf8") };
}

// No imports are allowed: the contracts are self-contained, so nothing outside src/ can change
// the bytecode.
function noImports(path) {
  return { error: `import of ${path} not allowed: contracts are self-contained` };
}

const input = { language: "Solidity", sources, settings: SETTINGS };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: noImports }));

let hadError = false;
for (const e of output.errors ?? []) {
  if (e.severity === "error") hadError = true;
  console.error(e.formattedMessage);
}
if (hadError) fail("compilation failed");

const files = new Map(); // name -> content
const combined = { contracts: {}, version: solc.version() };
for (const [file, names] of SOURCES) {
  for (const name of names) {
    const c = output.contracts?.[file]?.[name];
    if (!c) fail(`no output for ${file}:${name}`);
    const bin = c.evm.bytecode.object;
    const runtime = c.evm.deployedBytecode.object;
    if (!bin || !runtime) fail(`${name} has empty bytecode (abstract?)`);
    files.set(`${name}.abi`, JSON.stringify(c.abi, null, 2) + "\n");
    files.set(`${name}.bin`, bin + "\n");
    files.set(`${name}.bin-runtime`, runtime + "\n");
    combined.contracts[`${file}:${name}`] = { abi: c.abi, bin, "bin-runtime": runtime };
    console.error(`${name}: initcode ${bin.length / 2} bytes, runtime ${runtime.length / 2} bytes (EIP-170 limit 24576)`);
  }
}
files.set("combined.json", JSON.stringify(combined, null, 2) + "\n");

if (process.argv.includes("--check")) {
  const stale = [];
  for (const [f, content] of files) {
    const p = join(outDir, f);
    if (!existsSync(p) || readFileSync(p, "utf8") !== content) stale.push(f);
  }
  if (stale.length) fail(`artifacts out of date (run make contracts): ${stale.join(", ")}`);
  console.error("contracts: artifacts up to date");
} else {
  mkdirSync(outDir, { recursive: true });
  for (const [f, content] of files) writeFileSync(join(outDir, f), content);
}
