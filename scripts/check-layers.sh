#!/usr/bin/env bash
# Keeps the architecture invariants of src/lib.rs true by grepping the source:
# - ws/ and chat/ are pure: no syscalls, sockets, clock, threads, files or unsafe;
# - unsafe code appears only under src/io/.
# (Unit-test files, tests.rs, may read the clock to get an Instant.)
# Exits non-zero and names each offending line.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
pure_forbidden='libc::|std::net|std::fs|std::thread|Instant::now|SystemTime|std::process|\bunsafe\b'
if hits=$(grep -rnE "$pure_forbidden" src/ws src/chat --include=*.rs --exclude=tests.rs | grep -vE '^\S+:[0-9]+:\s*//'); then
    echo "check-layers: ws/ and chat/ must stay pure (no I/O, clock, threads or unsafe):"
    echo "$hits"
    status=1
fi
if hits=$(grep -rnE '\bunsafe\b' src --include=*.rs | grep -v '^src/io/' | grep -vE '^\S+:[0-9]+:\s*//' \
          | grep -v 'deny(unsafe_code)'); then
    echo "check-layers: unsafe code outside src/io/:"
    echo "$hits"
    status=1
fi
if [ "$status" -eq 0 ]; then
    echo "check-layers: ok (ws/ and chat/ pure; unsafe only in io/)"
fi
exit "$status"
