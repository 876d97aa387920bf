#!/usr/bin/env bash
# Runs the browser suite: the chat page in Debian's Chromium (playwright-core), against the
# real server, for each pattern in $WSCHAT_BROWSER_PATTERNS (see chat.test.mjs).
#
#   tests/browser/run.sh                # build the server if needed, npm ci, run the tests
#   tests/browser/run.sh --screenshot   # also write docs/screenshot-chat.png and -phone.png
#
# Exits 3 when Chromium or node/npm is missing (nothing was run).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
chromium=${CHROMIUM:-/usr/bin/chromium}

if [[ ! -x $chromium ]]; then
    echo "tests/browser: Chromium not found at $chromium (apt-get install chromium)" >&2
    exit 3
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "tests/browser: node and npm are needed (Node.js 20 or later)" >&2
    exit 3
fi

if [[ -z ${WSCHAT_BIN:-} ]]; then
    echo "tests/browser: cargo build --release -p wschat"
    (cd "$repo" && cargo build --release -p wschat --quiet)
fi
cd "$here"
if [[ ! -d node_modules/playwright-core ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm ci --no-audit --no-fund
fi
status=0
node --test --test-concurrency=1 chat.test.mjs || status=$?
if [[ ${1:-} == --screenshot ]]; then
    node screenshot.mjs || status=$?
fi
exit "$status"
