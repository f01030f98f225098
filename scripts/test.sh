#!/usr/bin/env bash
# Run every Flowstate check and test: the one command for developers and CI.
#
#   scripts/test.sh
#
# Target: a fresh Debian 12 machine, run as root, with a Rust toolchain
# (cargo, rustfmt, clippy) already installed. The script never installs or
# switches Rust toolchains. It uses apt-get only when a binary it needs is
# missing.
#
# Phases:
#   ensure_tools    check cargo/rustfmt/clippy; apt-get what is missing (C linker now;
#                   later a Python venv for moto, npm for Cosmos)
#   start_services  start the local servers the tests need, on 127.0.0.1 (PostgreSQL:
#                   a throwaway cluster, apt-get postgresql if initdb/pg_ctl are missing;
#                   the Cosmos test server; moto for DynamoDB; the Cloud Spanner emulator;
#                   memory and SQLite run in-process)
#   run_checks      cargo fmt --check, cargo clippy -D warnings, cargo test
#
# Every process started here is registered by PID (or process-group id) and
# stopped by the EXIT trap. All files go under one per-run directory, which is
# removed on exit.
#
# Features: neither clippy nor test passes --all-features. The facade will turn
# on every backend, and backends will carry heavy test-only switches (the Cosmos
# in-process emulator, the AWS default credential chain). --all-features would
# compile all of them on the 2-core budget and could combine options that are
# not meant to be combined. Instead, a crate whose tests need a feature turns it
# on through its own [dev-dependencies]. clippy --all-targets and cargo test
# then build the same feature set, so what is linted is what is tested.
#
# The phases run in order and stop at the first failure: on 2 cores, a compile
# error found by clippy should not be compiled again by cargo test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${TMPDIR:-/tmp}/flowstate-test.$$"

# ---- registry of what this run started (cleanup stops exactly these) --------
STARTED_PIDS=()  # single processes: kill PID
STARTED_PGIDS=() # process groups (servers that fork, started with setsid): kill -- -PGID
STOP_HOOKS=()    # functions run first, newest first (e.g. pg_ctl stop)
SERVICES=()      # service names: start_services calls start_<name> for each
PHASES=()        # "name status seconds" for the summary
RUN_START=$SECONDS

log() { printf '%s\n' "$*"; }
section() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

register_pid() { STARTED_PIDS+=("$1"); }
register_pgid() { STARTED_PGIDS+=("$1"); }
register_stop_hook() { STOP_HOOKS+=("$1"); }

# Stop everything registered, newest first: SIGTERM, up to 10 s grace, then SIGKILL.
stop_started() {
    local i id deadline
    for ((i = ${#STOP_HOOKS[@]} - 1; i >= 0; i--)); do
        "${STOP_HOOKS[i]}" || log "warning: stop hook ${STOP_HOOKS[i]} failed"
    done
    for ((i = ${#STARTED_PGIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM -- "-${STARTED_PGIDS[i]}" 2>/dev/null || true
    done
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${STARTED_PIDS[i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + 10))
    for id in ${STARTED_PGIDS[@]+"${STARTED_PGIDS[@]}"}; do
        while kill -0 -- "-$id" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL -- "-$id" 2>/dev/null || true
    done
    for id in ${STARTED_PIDS[@]+"${STARTED_PIDS[@]}"}; do
        while kill -0 "$id" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL "$id" 2>/dev/null || true
    done
}

summary() {
    local rc=$1 parts="" p
    for p in ${PHASES[@]+"${PHASES[@]}"}; do
        # shellcheck disable=SC2086 # split "name status seconds" on purpose
        set -- $p
        parts+="${parts:+, }$1 $2 ${3}s"
    done
    if ((rc == 0)); then
        log "==> flowstate tests: OK (${parts}; total $((SECONDS - RUN_START))s)"
    else
        log "==> flowstate tests: FAILED, exit $rc (${parts:-no phase ran}; total $((SECONDS - RUN_START))s)"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT
    set +e
    stop_started
    rm -rf "$RUN_DIR"
    summary "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- tools -------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need Debian packages: $* (apt-get not found; install them by hand)"
    ((EUID == 0)) || die "need Debian packages: $* (run as root, or install them first)"
    if ((APT_UPDATED == 0)); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# require_binary BINARY PACKAGE...: install PACKAGEs only when BINARY is missing.
require_binary() {
    local bin=$1
    shift
    command -v "$bin" >/dev/null 2>&1 && return 0
    log "$bin not found: installing $*"
    apt_install "$@"
    command -v "$bin" >/dev/null 2>&1 || die "$bin still missing after installing $*"
}

ensure_tools() {
    section "tools"
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a stable Rust toolchain first (see rust-version in Cargo.toml)"
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt not found: add the rustfmt component to your toolchain"
    cargo clippy --version >/dev/null 2>&1 || die "clippy not found: add the clippy component to your toolchain"
    # cargo links with the system C compiler, and libsqlite3-sys (bundled SQLite) compiles C with it.
    require_binary cc gcc libc6-dev
    log "$(cargo --version); $(cargo fmt --version); $(cargo clippy --version)"
}

# ---- services ----------------------------------------------------------------
# To add a server: write start_<name> that launches it on 127.0.0.1 with its
# files under "$RUN_DIR/<name>", registers what it started (register_pid,
# register_pgid or register_stop_hook), waits until it answers, and exports the
# FLOWSTATE_TEST_* variable its tests read. Then append <name> to SERVICES.
start_services() {
    section "services"
    mkdir -p "$RUN_DIR"
    if ((${#SERVICES[@]} == 0)); then
        log "no local servers needed (memory and SQLite run in-process)"
        return 0
    fi
    local name
    for name in "${SERVICES[@]}"; do
        log "starting $name"
        "start_$name"
    done
}

# ---- PostgreSQL ---------------------------------------------------------------
# A throwaway cluster in "$RUN_DIR/postgres": initdb as the `postgres` OS user
# (initdb refuses root), trust auth on 127.0.0.1 only, fsync and
# synchronous_commit left ON (durability is what the backend sells, so the
# tests pay for it too). The default collation is ICU en-US, where 'a' < 'B':
# the backend must compare strings by bytes with COLLATE "C" whatever the
# database's collation, and this cluster would catch it if it did not.
PG_BIN=""
PG_DATA=""

# find_pg_bin: set PG_BIN to a directory holding initdb and pg_ctl (PATH first,
# then the newest /usr/lib/postgresql/*/bin).
find_pg_bin() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        PG_BIN="$(dirname "$(command -v pg_ctl)")"
        return 0
    fi
    while IFS= read -r dir; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && PG_BIN="$dir"
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    [[ -n "$PG_BIN" ]]
}

# as_postgres CMD...: run as the `postgres` OS user when we are root.
as_postgres() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# free_port: print a TCP port nothing listens on at 127.0.0.1.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free loopback port found"
}

# Registered as a stop hook: fast shutdown by data dir; stop_started then
# kills the postmaster by PID if it is still alive.
stop_postgres() {
    [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]] || return 0
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 15 stop >/dev/null
}

start_postgres() {
    if ! find_pg_bin; then
        log "initdb/pg_ctl not found: installing Debian's postgresql"
        apt_install postgresql
        find_pg_bin || die "initdb/pg_ctl still missing after installing postgresql"
    fi
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "no 'postgres' OS user to run initdb as (Debian's postgresql package creates it)"
    fi
    local dir="$RUN_DIR/postgres" port pid attempt
    mkdir -p "$dir"
    chmod 700 "$dir"
    ((EUID == 0)) && chown postgres: "$dir"
    as_postgres test -w "$dir" || die "the postgres user cannot write $dir (is ${TMPDIR:-/tmp} traversable?)"
    PG_DATA="$dir/data"
    if ! as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C \
        --locale-provider=icu --icu-locale=en-US >"$dir/initdb.log" 2>&1; then
        tail -n 20 "$dir/initdb.log" >&2
        die "initdb failed (log above)"
    fi
    register_stop_hook stop_postgres
    for attempt in 1 2 3; do
        port=$(free_port)
        if as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300" start >/dev/null; then
            break
        fi
        ((attempt < 3)) || {
            tail -n 20 "$dir/postgres.log" >&2
            die "PostgreSQL did not start (log above)"
        }
        log "PostgreSQL did not start on port $port; trying another"
    done
    pid=$(head -n 1 "$PG_DATA/postmaster.pid")
    register_pid "$pid"
    export FLOWSTATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    log "PostgreSQL $("$PG_BIN/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port (pid $pid, data $PG_DATA)"
}
SERVICES+=(postgres)

# ---- Cosmos DB (HTTP smoke lane) ----------------------------------------------
# @vercel/cosmosdb-server (version pinned by tools/cosmos-server/package-lock.json)
# behind Flowstate's request/response-rewriting wrapper tools/cosmos-server/server.js,
# on a loopback port the wrapper picks itself (--port 0) and prints: no race for the
# port. HTTPS with the package's self-signed certificate, HTTP/1.1 only, no auth (any
# key is accepted; we pass the public emulator key). The full Cosmos conformance
# suite runs in-process on the SDK's emulator and needs no server; this one serves
# conformance-tests/tests/cosmos_http.rs. `npm ci` runs only when node_modules is missing.
COSMOS_KEY_URLENCODED='C2y6yDjf5%2FR%2Bob0N8A7Cgv30VRDJIWEHLM%2B4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw%2FJw%3D%3D'

start_cosmos() {
    require_binary node nodejs
    require_binary npm npm
    local tool="$ROOT/tools/cosmos-server" dir="$RUN_DIR/cosmos" pid port="" i
    if [[ ! -d "$tool/node_modules/@vercel/cosmosdb-server" ]]; then
        log "installing the Cosmos test server (npm ci in tools/cosmos-server)"
        (cd "$tool" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in tools/cosmos-server"
    fi
    mkdir -p "$dir"
    : >"$dir/server.out" # exists before the loop below reads it
    node "$tool/server.js" --host 127.0.0.1 --port 0 >"$dir/server.out" 2>"$dir/server.log" &
    pid=$!
    register_pid "$pid"
    for ((i = 0; i < 150; i++)); do
        port=$(sed -n 's|^cosmos-server listening on https://127\.0\.0\.1:\([0-9][0-9]*\)/$|\1|p' "$dir/server.out")
        [[ -n "$port" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/server.log" >&2
            die "the Cosmos test server exited (log above)"
        fi
        sleep 0.1
    done
    if [[ -z "$port" ]]; then
        tail -n 20 "$dir/server.log" >&2
        die "the Cosmos test server did not start within 15 s (log above)"
    fi
    export FLOWSTATE_TEST_COSMOS_ENDPOINT="cosmos://127.0.0.1:$port?key=$COSMOS_KEY_URLENCODED&accept_invalid_certs=true&http2=false"
    log "Cosmos test server (@vercel/cosmosdb-server $(node -p "require('$tool/node_modules/@vercel/cosmosdb-server/package.json').version"), node $(node --version)) on 127.0.0.1:$port (pid $pid)"
}
SERVICES+=(cosmos)

# ---- DynamoDB (moto) ------------------------------------------------------------
# moto's DynamoDB server mode from PyPI (pinned), in the project-local venv .venv/
# (gitignored; pip runs only when that moto version is missing). It runs through
# backend-dynamodb/testing/moto_server.py: the same server with its requests
# serialized, because moto_server's threads take no lock between a condition check
# and the write it guards, and the suite races conditional writes on purpose.
MOTO_VERSION=5.2.5

start_moto() {
    local venv="$ROOT/.venv" dir="$RUN_DIR/moto" pid="" port="" attempt i
    if ! "$venv/bin/python" -c "import importlib.metadata as m, moto.server; assert m.version('moto') == '$MOTO_VERSION'" 2>/dev/null; then
        require_binary python3 python3
        if [[ ! -x "$venv/bin/pip" ]]; then
            rm -rf "$venv"
            python3 -m venv "$venv" 2>/dev/null || {
                apt_install python3-venv
                rm -rf "$venv"
                python3 -m venv "$venv"
            } || die "could not create a Python venv in $venv"
        fi
        log "installing moto[server]==$MOTO_VERSION into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" || die "pip install moto failed"
    fi
    mkdir -p "$dir"
    for attempt in 1 2 3; do
        port=$(free_port)
        "$venv/bin/python" "$ROOT/backend-dynamodb/testing/moto_server.py" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
        pid=$!
        register_pid "$pid"
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                export FLOWSTATE_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
                log "moto $MOTO_VERSION (DynamoDB, requests serialized) on 127.0.0.1:$port (pid $pid)"
                return 0
            fi
            sleep 0.1
        done
        kill -TERM "$pid" 2>/dev/null || true
        ((attempt < 3)) && log "moto did not answer on port $port; trying another"
    done
    tail -n 20 "$dir/moto.log" >&2
    die "moto did not start (log above)"
}
SERVICES+=(moto)

# ---- Cloud Spanner (emulator) ----------------------------------------------------
# The Cloud Spanner emulator from Debian's google-cloud-cli-spanner-emulator (part of
# the machine image; its apt source is not reachable from here, so it is not
# installed when missing: the Spanner tests then skip, and fail under
# FLOWSTATE_TEST_REQUIRE=1, saying why). gateway_main spawns emulator_main as a
# child, so it runs in its own process group (setsid) and the whole group is
# stopped. The instance and database are created through the emulator's REST admin
# API; the backend creates its table on first use (DDL, as against real Spanner).
SPANNER_EMULATOR_DIR="${SPANNER_EMULATOR_DIR:-/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator}"
SPANNER_PROJECT=flowstate-test
SPANNER_INSTANCE=flowstate
SPANNER_DATABASE=conformance

# spanner_admin METHOD PATH [BODY]: one REST admin call to the emulator; prints the answer.
spanner_admin() {
    local method=$1 path=$2 body=${3:-}
    python3 - "$method" "http://127.0.0.1:$SPANNER_HTTP_PORT/v1/$path" "$body" <<'PY'
import sys, urllib.request
method, url, body = sys.argv[1:4]
req = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(r.read().decode())
except urllib.error.HTTPError as e:
    sys.exit(f"{method} {url}: HTTP {e.code}: {e.read().decode()[:500]}")
PY
}

start_spanner() {
    local gateway="$SPANNER_EMULATOR_DIR/gateway_main" dir="$RUN_DIR/spanner" pid="" grpc="" attempt i
    if [[ ! -x "$gateway" || ! -x "$SPANNER_EMULATOR_DIR/emulator_main" ]]; then
        log "Cloud Spanner emulator not found under $SPANNER_EMULATOR_DIR: the Spanner tests will say so (and fail under FLOWSTATE_TEST_REQUIRE=1)"
        return 0
    fi
    require_binary python3 python3
    mkdir -p "$dir"
    for attempt in 1 2 3; do
        grpc=$(free_port)
        SPANNER_HTTP_PORT=$(free_port)
        (cd "$dir" && exec setsid "$gateway" --hostname 127.0.0.1 --grpc_port "$grpc" --http_port "$SPANNER_HTTP_PORT" \
            --grpc_binary "$SPANNER_EMULATOR_DIR/emulator_main" >"$dir/emulator.log" 2>&1) &
        pid=$!
        register_pgid "$pid"
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$SPANNER_HTTP_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$grpc") 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$SPANNER_HTTP_PORT") 2>/dev/null; then
            spanner_admin POST "projects/$SPANNER_PROJECT/instances" \
                "{\"instanceId\":\"$SPANNER_INSTANCE\",\"instance\":{\"config\":\"emulator-config\",\"displayName\":\"flowstate tests\",\"nodeCount\":1}}" >/dev/null ||
                die "could not create the Spanner instance"
            spanner_admin POST "projects/$SPANNER_PROJECT/instances/$SPANNER_INSTANCE/databases" \
                "{\"createStatement\":\"CREATE DATABASE \`$SPANNER_DATABASE\`\"}" >/dev/null ||
                die "could not create the Spanner database"
            export SPANNER_EMULATOR_HOST="127.0.0.1:$grpc"
            export FLOWSTATE_TEST_SPANNER_URL="spanner://projects/$SPANNER_PROJECT/instances/$SPANNER_INSTANCE/databases/$SPANNER_DATABASE"
            log "Cloud Spanner emulator $(spanner_emulator_version) on 127.0.0.1:$grpc (REST $SPANNER_HTTP_PORT, process group $pid)"
            return 0
        fi
        kill -TERM -- "-$pid" 2>/dev/null || true
        ((attempt < 3)) && log "the Spanner emulator did not answer on ports $grpc/$SPANNER_HTTP_PORT; trying another"
    done
    tail -n 20 "$dir/emulator.log" >&2
    die "the Spanner emulator did not start (log above)"
}

# The emulator's Debian package and version (the binaries print no version).
spanner_emulator_version() {
    dpkg-query -W -f='(google-cloud-cli-spanner-emulator ${Version})' google-cloud-cli-spanner-emulator 2>/dev/null ||
        echo "(package version unknown)"
}
SERVICES+=(spanner)

# ---- checks ------------------------------------------------------------------
# run_phase NAME COMMAND...: run one phase with a header and its elapsed time.
run_phase() {
    local name=$1 start=$SECONDS rc=0
    shift
    section "$name: $*"
    "$@" || rc=$?
    local secs=$((SECONDS - start))
    if ((rc == 0)); then
        PHASES+=("$name ok $secs")
        log "--- $name: ok in ${secs}s"
    else
        PHASES+=("$name FAILED $secs")
        log "--- $name: FAILED (exit $rc) in ${secs}s"
    fi
    return "$rc"
}

run_checks() {
    run_phase fmt cargo fmt --all -- --check
    run_phase clippy cargo clippy --workspace --all-targets -- -D warnings
    # The facade's optional backends that its default features leave out
    # (their crates are already checked above, so this is quick).
    run_phase clippy-facade cargo clippy -p flowstate --all-targets --features memory,cosmos,dynamodb,spanner -- -D warnings
    run_phase test cargo test --workspace
}

main() {
    cd "$ROOT"
    if [[ ! -t 1 ]]; then
        export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
    fi
    # Service-backed tests fail instead of skipping when their server is not configured.
    export FLOWSTATE_TEST_REQUIRE=1
    export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
    ensure_tools
    start_services
    run_checks
}

# Run unless sourced (scripts/bench.sh reuses the service functions).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
