#!/usr/bin/env bash
# Makes a data directory the way a released hookgate leaves it, for the upgrade
# test (tests/e2e/upgrade.rs): runs the given `hookgate` binary on a scratch data
# directory, creates receivers and sends deliveries through its API, stops it with
# SIGTERM and keeps only hookgate.db, its WAL checkpointed into it.
#
#   tests/data/make-v1-datadir.sh <path-to-old-hookgate-binary> <out-dir>
#
# What ends up in the database (the e2e test checks each of these):
#   receivers  github-pr-preview  active, HMAC (GitHub's example secret)
#              ops-hook           disabled, header_equals (a test token)
#              gone-hook          deleted
#   deliveries to github-pr-preview: pr 1 opened (succeeded: ensure_sandbox and
#              deliver_to_port to the echo image), pr 1 labeled (no_match), its
#              replay (no_match, replay_of), pr 2 synchronize (failed:
#              deliver_to_port 3001, a port the sandbox does not serve, with
#              max_attempts 1), pr 1 closed (succeeded: delete_sandbox);
#              one no_match each to ops-hook and gone-hook before they were
#              disabled and deleted.
#   sandboxes  pr-1 deleted; pr-2 failed (its process group killed).
# No sandbox is left running: its pid would mean nothing on another machine.
#
# Needs curl, openssl, jq and sqlite3. Every secret here is a test secret.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 <path-to-old-hookgate-binary> <out-dir>" >&2
    exit 2
fi
for tool in curl openssl jq sqlite3; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 2; }
done
bin=$(realpath "$1")
out=$2

GITHUB_SECRET="It's a Secret to Everybody"
TOKEN=hg_test_admin_token_for_the_v1_fixture
work=$(mktemp -d)
data=$work/data
host_pid=
sandbox_pgids=()

cleanup() {
    [[ -n $host_pid ]] && kill -KILL "$host_pid" 2>/dev/null || true
    for g in "${sandbox_pgids[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "$0: $*" >&2
    echo "--- host log (last 40 lines)" >&2
    tail -n 40 "$work/host.log" >&2 || true
    exit 1
}

# A free loopback port: one nothing answers on.
port=
for _ in $(seq 50); do
    candidate=$((20000 + RANDOM % 20000))
    if ! (echo >"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[[ -n $port ]] || fail "no free port found"
base=http://127.0.0.1:$port

mkdir -p "$data"
(
    cd "$work"
    exec env HOOKGATE_DATA_DIR="$data" HOOKGATE_LISTEN="127.0.0.1:$port" \
        HOOKGATE_ADMIN_TOKEN="$TOKEN" HOOKGATE_RUNNER_MAX_ATTEMPTS=1 \
        HOOKGATE_LOG_LEVEL=info "$bin" serve
) >"$work/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 200); do
    curl -fsS "$base/healthz" >/dev/null 2>&1 && break
    kill -0 "$host_pid" 2>/dev/null || fail "hookgate serve exited"
    sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || fail "hookgate serve did not come up on $base"

# api METHOD PATH [JSON]: a management call; prints the response's data.
api() {
    local args=(-sS -X "$1" "$base$2" -H "Authorization: Bearer $TOKEN" -w '\n%{http_code}')
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    local reply code
    reply=$(curl "${args[@]}")
    code=${reply##*$'\n'}
    reply=${reply%$'\n'*}
    [[ $code == 2* ]] || fail "$1 $2 answered $code: $reply"
    jq -c '.data' <<<"$reply"
}

# github RECEIVER DELIVERY-ID ACTION PR: a pull_request event signed as GitHub
# signs it; prints the delivery id hookgate gave it.
github() {
    local body sig reply
    body=$(printf '{"action":"%s","number":%s,"pull_request":{"number":%s}}' "$3" "$4" "$4")
    sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$GITHUB_SECRET" | awk '{print $NF}')
    reply=$(curl -sS -X POST "$base/hooks/$1" -H 'Content-Type: application/json' \
        -H 'X-GitHub-Event: pull_request' -H "X-GitHub-Delivery: $2" \
        -H "X-Hub-Signature-256: sha256=$sig" --data "$body")
    jq -er '.data.delivery_id' <<<"$reply" || fail "delivery $2 not accepted: $reply"
}

# settle DELIVERY-ID WANT: waits until the runner is done with it.
settle() {
    local status
    for _ in $(seq 300); do
        status=$(api GET "/v1/deliveries/$1" | jq -r '.status')
        [[ $status != pending ]] && break
        sleep 0.1
    done
    [[ $status == "$2" ]] || fail "delivery $1 ended $status, wanted $2"
}

github_id=$(api POST /v1/webhooks/incoming "$(jq -n --arg secret "$GITHUB_SECRET" '{
  name: "github-pr-preview",
  auth: {auth_type: "hmac", algorithm: "sha256", encoding: "hex", prefix: "sha256=",
         secret: {name: "github_webhook_secret", value: $secret},
         signature: {source: "header", name: "X-Hub-Signature-256"},
         signed_payload: {type: "raw_body"}},
  target: {target_type: "sandbox_name_from_event",
           source: {source: "json_path", path: "$.pull_request.number"},
           required_prefix: "pr-"},
  idempotency: {source: "header", name: "X-GitHub-Delivery"},
  rules: [
    {when: {json_path: "$.action", equals: "opened"},
     actions: [{action_type: "ensure_sandbox", template: {image: "echo", ports: [3000]}},
               {action_type: "deliver_to_port", port: 3000}]},
    {when: {json_path: "$.action", equals: "synchronize"},
     actions: [{action_type: "ensure_sandbox", template: {image: "echo", ports: [3000]}},
               {action_type: "deliver_to_port", port: 3001}]},
    {when: {json_path: "$.action", equals: "closed"},
     actions: [{action_type: "delete_sandbox"}]}
  ]}')" | jq -r '.id')

ops_id=$(api POST /v1/webhooks/incoming '{
  "name": "ops-hook",
  "auth": {"auth_type": "header_equals", "name": "X-Ops-Token",
           "secret": {"name": "ops_token", "value": "test-ops-token"}},
  "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "ops"},
  "rules": [{"when": {"json_path": "$.job", "equals": "teardown"},
             "actions": [{"action_type": "delete_sandbox"}]}]}' | jq -r '.id')

gone_id=$(api POST /v1/webhooks/incoming '{
  "name": "gone-hook",
  "auth": {"auth_type": "none"},
  "target": {"target_type": "fixed_sandbox_name", "sandbox_name": "gone"},
  "rules": [{"when": {"json_path": "$.job", "equals": "teardown"},
             "actions": [{"action_type": "delete_sandbox"}]}]}' | jq -r '.id')

opened=$(github "$github_id" gh-1 opened 1)
settle "$opened" succeeded
labeled=$(github "$github_id" gh-2 labeled 1)
settle "$labeled" no_match
replayed=$(api POST "/v1/deliveries/$labeled/replay" | jq -r '.delivery_id')
settle "$replayed" no_match
synced=$(github "$github_id" gh-3 synchronize 2)
settle "$synced" failed
closed=$(github "$github_id" gh-4 closed 1)
settle "$closed" succeeded

ops=$(curl -sS -X POST "$base/hooks/$ops_id" -H 'X-Ops-Token: test-ops-token' \
    -H 'Content-Type: application/json' --data '{"job":"nightly"}' | jq -er '.data.delivery_id')
settle "$ops" no_match
api PUT "/v1/webhooks/incoming/$ops_id" '{"status": "disabled"}' >/dev/null
gone=$(curl -sS -X POST "$base/hooks/$gone_id" -H 'Content-Type: application/json' \
    --data '{"job":"once"}' | jq -er '.data.delivery_id')
settle "$gone" no_match
api DELETE "/v1/webhooks/incoming/$gone_id" >/dev/null

# pr-2 dies under the host, which marks it failed.
pgid=$(api GET /v1/sandboxes/pr-2 | jq -er '.pid')
sandbox_pgids+=("$pgid")
kill -KILL -- "-$pgid"
for _ in $(seq 100); do
    [[ $(api GET /v1/sandboxes/pr-2 | jq -r '.state') == failed ]] && break
    sleep 0.1
done
[[ $(api GET /v1/sandboxes/pr-2 | jq -r '.state') == failed ]] || fail "pr-2 was not marked failed"
[[ $(api GET /v1/sandboxes/pr-1 | jq -r '.state') == deleted ]] || fail "pr-1 was not deleted"

kill -TERM "$host_pid"
wait "$host_pid" || fail "hookgate serve exited $? after SIGTERM"
host_pid=

# The host's connections may leave the WAL behind; fold it into the database
# (sqlite3 removes -wal and -shm as its connection closes).
db=$data/hookgate.db
checkpoint=$(sqlite3 "$db" 'PRAGMA wal_checkpoint(TRUNCATE);')
[[ $checkpoint == 0\|* ]] || fail "checkpoint was busy: $checkpoint"
[[ ! -e $db-wal && ! -e $db-shm ]] || fail "the WAL is still beside $db"
[[ $(sqlite3 "$db" 'PRAGMA integrity_check;') == ok ]] || fail "integrity check failed"
[[ ! -e $db-wal && ! -e $db-shm ]] || fail "the WAL came back beside $db"

mkdir -p "$out"
cp "$db" "$out/hookgate.db"
echo "wrote $out/hookgate.db from $("$bin" --version)"
sqlite3 "$out/hookgate.db" "SELECT 'user_version ' || user_version FROM pragma_user_version;
  SELECT 'receiver ' || id || ' ' || name || ' ' || status || ' deleted=' || (deleted_at IS NOT NULL) FROM receivers ORDER BY created_at;
  SELECT 'delivery ' || id || ' ' || status FROM deliveries ORDER BY id;
  SELECT 'sandbox ' || name || ' ' || state FROM sandboxes ORDER BY name;"
