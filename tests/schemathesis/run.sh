#!/usr/bin/env bash
# Fuzzes the API against its own OpenAPI document with schemathesis (`--checks all`): once on a
# server without API tokens and once on a server with one, each started here on a free port with
# a fresh data directory and seeded with a few resources (see schemathesis.toml). Uses the debug
# binary the tests build (SLUICE_BIN overrides it), installs the pinned schemathesis
# (requirements.txt) into a virtualenv under target/, and stops the servers it started however
# it ends. Fails when schemathesis reports any failure.
#
# Usage: tests/schemathesis/run.sh   (SCHEMATHESIS_EXAMPLES: examples per operation instead of
#                                     schemathesis.toml's; SCHEMATHESIS_SEED: a fixed seed)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${SLUICE_BIN:-$root/target/debug/sluice}"
work="$root/target/schemathesis"
venv="$work/venv"
token="schemathesis-$(date +%s)-$$-token"

log() { echo "==> $(date -u +%H:%M:%S) schemathesis: $*"; }
fail() { echo "FAILED: schemathesis: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "no server binary at $bin (build it: cargo build --bin sluice)"
mkdir -p "$work"

# --- schemathesis, pinned, in its own virtualenv ----------------------------------------------
stamp="$venv/.requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  log "installing schemathesis into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed (install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
st="$venv/bin/schemathesis"

# --- servers ------------------------------------------------------------------------------------
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap stop_servers EXIT
trap "exit 130" INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# request METHOD PATH [JSON]: prints the body of a 2xx answer; otherwise says what was answered.
request() {
  local method=$1 path=$2 body=${3:-}
  local args=(-sS -X "$method" -H "content-type: application/json" -w '\n%{http_code}')
  [ -n "$auth" ] && args+=(-H "authorization: Bearer $token")
  [ -n "$body" ] && args+=(-d "$body")
  local reply status
  reply="$(curl "${args[@]}" "$base$path")" || { echo "$method $path: no answer" >&2; return 1; }
  status="${reply##*$'\n'}"
  reply="${reply%$'\n'*}"
  case "$status" in
    2*) printf '%s' "$reply" ;;
    *) echo "$method $path answered $status: $reply" >&2; return 1 ;;
  esac
}

# field PATH.TO.FIELD: reads one field of the JSON on stdin.
field() {
  python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"
}

# start_server NAME [TOKEN]: sets $base, $auth, $dir.
start_server() {
  local name=$1
  auth=${2:-}
  dir="$work/$name"
  rm -rf "$dir"
  mkdir -p "$dir/files"
  cp "$here/orders.csv" "$dir/files/"
  local port
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  # The server's working directory is its only allowed root, so relative store paths are valid.
  (
    cd "$dir"
    export SLUICE__DATA_DIR="$dir/data" SLUICE__SERVER__PORT="$port" \
      SLUICE__FILES__ALLOWED_ROOTS="$dir" SLUICE__SERVER__WORKERS=2 SLUICE__ENGINE__THREADS=2 \
      SLUICE__TELEMETRY__LEVEL="warn"
    [ -n "$auth" ] && export SLUICE__AUTH__TOKENS="$token"
    exec "$bin" serve
  ) >"$dir/server.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 120); do
    curl -sf "$base/readyz" >/dev/null 2>&1 && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.5
  done
  cat "$dir/server.log" >&2
  fail "the $name server did not become ready"
}

# create WHAT PATH JSON ID: creates a resource and checks that it got id ID.
create() {
  local what=$1 path=$2 body=$3 want=$4 reply
  reply="$(request POST "$path" "$body")" || fail "seeding: creating $what failed"
  local id
  id="$(field id <<<"$reply")"
  [ "$id" = "$want" ] || fail "seeding: $what got id $id, not $want"
}

# The resources schemathesis.toml names by id (a fresh database numbers them from 1).
seed() {
  create "the CSV store" /api/v1.0/data-stores '{"name": "raw_files", "kind": "file",
    "engine": "csv", "connection": {"type": "file", "path": "files"}}' 1
  create "the SQLite store" /api/v1.0/data-stores '{"name": "warehouse",
    "kind": "relational_db", "engine": "sqlite",
    "connection": {"type": "file", "path": "files/warehouse.db"}}' 2
  create "the flow input" /api/v1.0/flow-inputs '{"name": "orders_by_status",
    "source_store_ids": [1], "target_store_id": 2,
    "sources": [{"name": "orders", "store_id": 1, "path": "orders.csv"}],
    "transforms": [{"name": "by_status",
                    "sql": "SELECT status, count(*) AS n FROM orders GROUP BY status"}]}' 1
  create "the flow" /api/v1.0/flows '{"flow_input_id": 1}' 1
  local state="" reply
  for _ in $(seq 1 120); do
    reply="$(request GET /api/v1.0/flows/1)" || fail "seeding: reading flow 1 failed"
    state="$(field output.state <<<"$reply")"
    [ "$state" = COMPLETED ] && return 0
    case "$state" in FAILED | CANCELLED) break ;; esac
    sleep 0.5
  done
  fail "seeding: flow 1 is $state, not COMPLETED: $reply"
}

# fuzz NAME: runs schemathesis against the server started last.
fuzz() {
  local name=$1
  local doc="$dir/openapi.json"
  request GET /api/v1.0/openapi.json >"$doc" || fail "$name: the document cannot be read"
  local args=(run "$doc" --url "$base" --checks all --request-timeout 30 --no-color
    --report junit --report-dir "$dir/report")
  [ -n "${SCHEMATHESIS_EXAMPLES:-}" ] && args+=(--max-examples "$SCHEMATHESIS_EXAMPLES")
  [ -n "$auth" ] && args+=(--header "Authorization: Bearer $token")
  [ -n "${SCHEMATHESIS_SEED:-}" ] && args+=(--seed "$SCHEMATHESIS_SEED")
  log "$name: against $base"
  # From $work, so that schemathesis keeps its cache (failures it replays first) under target/.
  if ! (cd "$work" && "$st" --config-file "$here/schemathesis.toml" "${args[@]}"); then
    fail "$name: schemathesis found failures (above; server log: $dir/server.log)"
  fi
}

start_server no-token
seed
fuzz no-token
stop_servers

start_server with-token "$token"
seed
fuzz with-token
stop_servers

log "passed, with and without a token"
