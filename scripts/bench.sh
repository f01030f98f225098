#!/usr/bin/env bash
# Benchmarks on every backend, in one run: starts the same loopback servers as
# scripts/test.sh (PostgreSQL, moto, the Cosmos test server, the Cloud Spanner
# emulator), builds the bench in release mode and measures memory, SQLite,
# PostgreSQL, DynamoDB-on-moto, Cosmos-over-HTTP and Spanner-on-the-emulator. Extra arguments go to flowstate-bench (e.g. --runs 9,
# --json results.json). Timings against moto and the Cosmos test server say
# little; their round-trip counts and Flowstate/raw ratios do.
#
#   scripts/bench.sh [flowstate-bench options]
set -euo pipefail
# shellcheck source=scripts/test.sh
source "$(dirname "${BASH_SOURCE[0]}")/test.sh"
cd "$ROOT"
ensure_tools
start_services
section "build: cargo build --release -p flowstate-bench"
cargo build --release -p flowstate-bench
section "bench: real stores"
target/release/flowstate-bench --store memory:// --store sqlite:// --store "$FLOWSTATE_TEST_POSTGRES_URL" "$@"
# The emulators are slow (moto ~6 ms a request, and its TransactWriteItems
# copies the whole table), so they get small runs: their round-trip tables
# are exact, their timings are not DynamoDB's or Cosmos DB's.
section "bench: emulated stores (round trips exact, timings not representative)"
target/release/flowstate-bench --runs 5 --iterations 20 --instances 40 \
    --store "dynamodb://?endpoint=$FLOWSTATE_TEST_DYNAMODB_ENDPOINT&region=us-east-1&prefix=bench_" \
    --store "$FLOWSTATE_TEST_COSMOS_ENDPOINT"
# The Spanner emulator runs one read-write transaction at a time (others are
# aborted and retried), so its throughput figures say nothing about Spanner.
if [[ -n "${FLOWSTATE_TEST_SPANNER_URL:-}" ]]; then
    target/release/flowstate-bench --runs 5 --iterations 20 --instances 40 \
        --store "$FLOWSTATE_TEST_SPANNER_URL?table=bench_items"
else
    log "skipping Spanner: the Cloud Spanner emulator is not installed"
fi
