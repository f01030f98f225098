#!/usr/bin/env node
// Test-only Cosmos DB server for Flowstate's HTTP smoke lane: @vercel/cosmosdb-server
// (pinned in package.json) behind a small request/response rewriter that fixes where
// it differs from what the Rust SDK (azure_data_cosmos 1.0) expects:
//
//   1. Partition key ranges: the server returns `id` (and `parents`) as numbers; the
//      SDK parses them as strings and cannot open a container. -> stringified.
//   2. Reading a missing document: the server throws and answers 500; Cosmos answers
//      404 NotFound. -> a 500 on GET .../docs/{id} that comes from a missing document
//      becomes 404 with Cosmos's NotFound body.
//   3. Queries: the server refuses to look across partitions unless
//      `x-ms-documentdb-query-enablecrosspartition: true` is sent (and ignores the
//      partition-key header of a partition-scoped query). -> the header is added to
//      every query; Flowstate's queries also filter on the partition key in SQL.
//   4. Transactional batches: the server wants `partitionKey` on each operation; the
//      SDK sends it once in `x-ms-documentdb-partitionkey`. -> copied into each
//      operation that lacks it. (Batches are still NOT atomic on this server: tests
//      that depend on batch atomicity do not run against it.)
//
// Usage: node server.js [--host 127.0.0.1] [--port 0]
// Prints `cosmos-server listening on https://HOST:PORT/` once it accepts connections
// (port 0 picks a free one). HTTPS with the package's self-signed certificate,
// HTTP/1.1 only. Loopback hosts only: it has no authentication.
"use strict";

const { PassThrough } = require("stream");
const { createHttpsServer } = require("@vercel/cosmosdb-server");

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: 0 };
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === "--host") args.host = value;
    else if (flag === "--port") args.port = Number(value);
    else throw new Error(`unknown argument ${flag}`);
    i += 1;
  }
  if (!["127.0.0.1", "localhost", "::1"].includes(args.host)) {
    throw new Error(`refusing to listen on ${args.host}: loopback only`);
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    throw new Error(`bad port ${args.port}`);
  }
  return args;
}

const isQuery = (req) => String(req.headers["x-ms-documentdb-isquery"]).toLowerCase() === "true";
const isBatch = (req) => String(req.headers["x-ms-cosmos-is-batch-request"]).toLowerCase() === "true";
const DOC_PATH = /^\/dbs\/[^/]+\/colls\/[^/]+\/docs\/[^/]+$/;
const PKRANGES_PATH = /^\/dbs\/[^/]+\/colls\/[^/]+\/pkranges$/;

// Fix 3 and 4: headers and body of the request, before the server sees it.
function rewriteRequest(req, body) {
  const headers = { ...req.headers };
  if (req.method === "POST" && isQuery(req)) {
    headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
  }
  if (req.method === "POST" && isBatch(req) && body.length > 0) {
    const header = headers["x-ms-documentdb-partitionkey"];
    let ops;
    try {
      ops = JSON.parse(body.toString("utf8"));
    } catch (_) {
      ops = null;
    }
    if (Array.isArray(ops) && header) {
      for (const op of ops) {
        if (op && typeof op === "object" && op.partitionKey === undefined) op.partitionKey = header;
      }
      body = Buffer.from(JSON.stringify(ops));
    }
  }
  headers["content-length"] = String(body.length);
  return { headers, body };
}

// Fix 1 and 2: status and body of the response, before it is sent.
function rewriteResponse(req, res, text) {
  const path = req.url.split("?")[0];
  let body;
  try {
    body = JSON.parse(text);
  } catch (_) {
    return text;
  }
  if (req.method === "GET" && PKRANGES_PATH.test(path) && body && Array.isArray(body.PartitionKeyRanges)) {
    for (const range of body.PartitionKeyRanges) {
      if (typeof range.id === "number") range.id = String(range.id);
      if (Array.isArray(range.parents)) range.parents = range.parents.map(String);
    }
  }
  if (req.method === "GET" && DOC_PATH.test(path) && res.statusCode === 500 && /Cannot read propert/.test(body.message || "")) {
    res.statusCode = 404;
    body = { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
  }
  return JSON.stringify(body);
}

// The package logs the TypeError of fix 2 with a stack trace on every read of a
// missing document; that read is an ordinary 404 once rewritten, so stay quiet.
function quietMissingDocumentErrors() {
  const error = console.error.bind(console);
  console.error = (first, ...rest) => {
    const stack = first && first.stack ? String(first.stack) : "";
    if (first instanceof TypeError && stack.includes("read-document.js")) return;
    error(first, ...rest);
  };
}

function main() {
  const { host, port } = parseArgs(process.argv.slice(2));
  quietMissingDocumentErrors();
  // COSMOS_SERVER_LOG=1: one line per request on stderr (method, path, status).
  const log = process.env.COSMOS_SERVER_LOG === "1";
  const server = createHttpsServer({ keepAlive: true });
  // The package installs one 'request' listener; put the rewriter in front of it.
  const [inner] = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("error", () => res.destroy());
    req.on("end", () => {
      const { headers, body } = rewriteRequest(req, Buffer.concat(chunks));
      const fake = new PassThrough();
      fake.headers = headers;
      fake.method = req.method;
      fake.url = req.url;
      fake.httpVersion = req.httpVersion;
      fake.socket = req.socket;
      fake.connection = req.socket;
      fake.end(body);
      const end = res.end.bind(res);
      res.end = (chunk, ...rest) => {
        if (typeof chunk === "string" || Buffer.isBuffer(chunk)) {
          chunk = rewriteResponse(req, res, chunk.toString("utf8"));
        }
        if (log) process.stderr.write(`${req.method} ${req.url} -> ${res.statusCode}\n`);
        return end(chunk, ...rest);
      };
      inner.call(server, fake, res);
    });
  });
  server.listen(port, host, () => {
    const { port: actual } = server.address();
    const shown = host.includes(":") ? `[${host}]` : host;
    process.stdout.write(`cosmos-server listening on https://${shown}:${actual}/\n`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();
