#!/usr/bin/env bash
# Interop: the chat scenario (join, notices, broadcast, binary, /nick, /who, ping, /echo,
# close codes 1000/1007/1009/1001) run by client libraries we did not write: Python
# `websockets` and Node `ws` (both offer permessage-deflate, which the server must decline
# cleanly), plus curl for handshake edge cases. Prints a table; exits non-zero on any FAIL.
#
#   scripts/interop.sh [-- SERVER_ARGS...]     e.g. scripts/interop.sh -- --pattern reuseport --threads 2
#
# Needs python3 (venv + pip) and node/npm; exits 3 when either is missing. The Python venv
# lives in ${WSCHAT_CACHE:-$HOME/.cache/wschat}/interop-venv (scripts/interop/requirements.txt),
# the Node client in scripts/interop/node (package-lock.json). $WSCHAT_BIN picks the server
# binary; otherwise it is built with cargo (release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
here=$repo/scripts/interop

server_args=()
while (($#)); do
    case $1 in
        --) shift; server_args=("$@"); break ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "interop.sh: unknown option: $1" >&2; exit 2 ;;
    esac
done

for tool in python3 node npm curl; do
    command -v "$tool" >/dev/null || { echo "interop.sh: $tool not found" >&2; exit 3; }
done

# --- clients ---
venv=${WSCHAT_CACHE:-$HOME/.cache/wschat}/interop-venv
if [[ ! -x $venv/bin/python ]] || ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    echo "interop: Python venv at $venv"
    python3 -m venv "$venv" || { echo "interop.sh: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 3; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi
if [[ ! -d $here/node/node_modules/ws ]] || [[ $here/node/package-lock.json -nt $here/node/node_modules/.package-lock.json ]]; then
    (cd "$here/node" && npm ci --no-audit --no-fund --silent)
fi
py_version=$("$venv/bin/python" -c 'import websockets; print(websockets.__version__)')
node_version=$(node -p 'require("./scripts/interop/node/node_modules/ws/package.json").version')

# --- server ---
if [[ -n ${WSCHAT_BIN:-} ]]; then
    bin=$WSCHAT_BIN
else
    cargo build --release -p wschat --quiet
    bin=${CARGO_TARGET_DIR:-$repo/target}/release/wschat
fi
work=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
allowed=http://allowed.test
"$bin" --addr 127.0.0.1:0 --max-message 65536 --allowed-origin "$allowed" "${server_args[@]}" \
    >"$work/server.out" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    addr=$(grep -o 'listening on [^ ]*' "$work/server.out" | head -1 | cut -d' ' -f3) && [[ -n $addr ]] && break
    sleep 0.05
done
[[ -n ${addr:-} ]] || { echo "interop.sh: the server did not start:" >&2; cat "$work/server.out" >&2; exit 1; }
echo "interop: server on $addr (${server_args[*]:-single-thread})"

# --- the scenario, once per library ---
"$venv/bin/python" "$here/client.py" scenario "ws://$addr" >"$work/py.txt" 2>&1 || true
node "$here/node/client.mjs" scenario "ws://$addr" >"$work/node.txt" 2>&1 || true

# --- handshake edge cases with curl ---
key=dGhlIHNhbXBsZSBub25jZQ==
curl_check() { # NAME WANT_STATUS HEADER_REGEX(or "") CURL_ARGS...
    local name=$1 want=$2 header=$3 got
    shift 3
    got=$(curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' --max-time 2 "$@" || true)
    got=${got:0:3}
    if [[ $got != "$want" ]]; then
        echo "FAIL $name: status $got, want $want" >>"$work/curl.txt"
    elif [[ -n $header ]] && ! grep -qiE "$header" "$work/headers"; then
        echo "FAIL $name: no header matching /$header/" >>"$work/curl.txt"
    else
        echo "PASS $name" >>"$work/curl.txt"
    fi
}
: >"$work/curl.txt"
up=(-H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Key: $key")
url=http://$addr
curl_check "GET / serves the page" 200 '^content-type: text/html' "$url/"
curl_check "GET /stats" 200 '^content-type: application/json' "$url/stats"
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["pattern"] and d["threads"]' "$work/body" 2>/dev/null; then
    echo "PASS /stats is JSON with pattern and threads" >>"$work/curl.txt"
else
    echo "FAIL /stats is JSON with pattern and threads" >>"$work/curl.txt"
fi
curl_check "upgrade (version 13) -> 101" 101 '^sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=' "${up[@]}" -H "Sec-WebSocket-Version: 13" "$url/chat"
curl_check "version 12 -> 426 with Sec-WebSocket-Version 13" 426 '^sec-websocket-version: 13' \
    -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Key: $key" -H "Sec-WebSocket-Version: 12" "$url/chat"
curl_check "bad Sec-WebSocket-Key -> 400" 400 "" \
    -H "Connection: Upgrade" -H "Upgrade: websocket" -H "Sec-WebSocket-Key: short" -H "Sec-WebSocket-Version: 13" "$url/chat"
curl_check "bad room -> 400" 400 "" "${up[@]}" -H "Sec-WebSocket-Version: 13" "$url/chat/no%20spaces"
curl_check "bad name -> 400" 400 "" "${up[@]}" -H "Sec-WebSocket-Version: 13" "$url/chat?name=%20lead"
curl_check "unknown path -> 404" 404 "" "$url/nope"
curl_check "POST / -> 405" 405 "" -X POST -d x "$url/"
curl_check "foreign Origin (--allowed-origin set) -> 403" 403 "" "${up[@]}" -H "Sec-WebSocket-Version: 13" -H "Origin: http://evil.test" "$url/chat"
curl_check "allowed Origin -> 101" 101 "" "${up[@]}" -H "Sec-WebSocket-Version: 13" -H "Origin: $allowed" "$url/chat"

# --- shutdown: each library holds a connection; SIGTERM must close it with 1001 ---
"$venv/bin/python" "$here/client.py" shutdown "ws://$addr" >>"$work/py.txt" 2>&1 &
py_pid=$!
node "$here/node/client.mjs" shutdown "ws://$addr" >>"$work/node.txt" 2>&1 &
node_pid=$!
for _ in $(seq 100); do
    grep -q READY "$work/py.txt" && grep -q READY "$work/node.txt" && break
    sleep 0.05
done
kill -TERM "$server_pid"
wait "$server_pid" && echo "PASS server exits 0 after SIGTERM" >>"$work/curl.txt" \
    || echo "FAIL server exits 0 after SIGTERM" >>"$work/curl.txt"
server_pid=
wait "$py_pid" || true
wait "$node_pid" || true

# --- the table ---
result() { # FILE CHECK -> PASS/FAIL/—
    local line
    line=$(grep -E "^(PASS|FAIL) $(printf '%s' "$2" | sed 's/[][\.*^$/+?(){}|]/\\&/g')(:|$)" "$1" | head -1 || true)
    [[ -z $line ]] && { echo "—"; return; }
    echo "${line%% *}"
}
{
    echo "| check | websockets $py_version (Python) | ws $node_version (Node) |"
    echo "|---|---|---|"
    grep -hoE '^(PASS|FAIL) [^:]*' "$work/py.txt" "$work/node.txt" | cut -d' ' -f2- | awk '!seen[$0]++' |
        while IFS= read -r check; do
            echo "| $check | $(result "$work/py.txt" "$check") | $(result "$work/node.txt" "$check") |"
        done
    echo
    echo "| check (curl $(curl --version | head -1 | cut -d' ' -f2)) | result |"
    echo "|---|---|"
    grep -oE '^(PASS|FAIL) [^:]*' "$work/curl.txt" | while read -r verdict check; do echo "| $check | $verdict |"; done
} >"$work/table.md"
echo
cat "$work/table.md"
if [[ -n ${INTEROP_TABLE:-} ]]; then cp "$work/table.md" "$INTEROP_TABLE"; fi

if grep -h '^FAIL' "$work/py.txt" "$work/node.txt" "$work/curl.txt" | sed 's/^/  /' | grep . >"$work/fails"; then
    echo; echo "interop: FAILED checks:"; cat "$work/fails"
    exit 1
fi
total=$(cat "$work/py.txt" "$work/node.txt" "$work/curl.txt" | grep -c '^PASS')
echo; echo "interop: $total passed, 0 failed"
