#!/usr/bin/env bash
# Tests for scripts/check-layers.sh: it runs on a copy of src/ in a temporary directory,
# first as it is (must pass), then once per fault put into a fresh copy (must fail, naming
# the file, the line and the arrow). The real tree is never touched.
#
#   scripts/check-layers-test.sh
#
# One line per check, then "N passed, M failed"; exits 1 if any check failed. Takes about a
# second.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-layers-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# fresh: a copy of the script and of src/ as they are.
fresh() {
    rm -rf "$tmp/tree"
    mkdir -p "$tmp/tree/scripts"
    cp "$here/check-layers.sh" "$tmp/tree/scripts/"
    cp -r "$repo/src" "$tmp/tree/src"
}
# run: the script on the copy; output in $tmp/out, exit status in $rc.
run() {
    rc=0
    bash "$tmp/tree/scripts/check-layers.sh" >"$tmp/out" 2>&1 || rc=$?
}
# append FILE TEXT: adds a line at the end of a file of the copy.
append() { printf '%s\n' "$2" >>"$tmp/tree/$1"; }
# table PATTERN NEW: replaces an entry of the copy's table of allowed arrows (PATTERN: sed).
table() {
    local script="$tmp/tree/scripts/check-layers.sh"
    grep -q -- "$1" "$script" || { echo "table: no entry $1 in the script" >&2; exit 2; }
    sed -i "s/$1/$2/" "$script"
}
# lines FILE: how many lines a file of the copy has (the line an append lands on, after).
lines() { wc -l <"$tmp/tree/$1"; }

# expect_failure NAME WANTED...: the run failed and its output holds every WANTED string.
expect_failure() {
    local name=$1 want
    shift
    if ((rc == 0)); then
        report_fail "$name" "exit 0, expected a failure"
        return
    fi
    for want in "$@"; do
        if ! grep -qF -- "$want" "$tmp/out"; then
            report_fail "$name" "the output does not say: $want"
            return
        fi
    done
    echo "ok   $name"
    passed=$((passed + 1))
}
report_fail() {
    echo "FAIL $1"
    echo "       $2"
    sed 's/^/       | /' "$tmp/out"
    failed=$((failed + 1))
}
# expect_success NAME: the run passed.
expect_success() {
    if ((rc == 0)); then
        echo "ok   $1"
        passed=$((passed + 1))
    else
        report_fail "$1" "exit $rc"
    fi
}
# forbidden NAME FILE LINE ARROW...: in a fresh copy, LINE appended to FILE must fail the
# check with each ARROW ("from -> to") named at FILE and that line.
forbidden() {
    local name=$1 file=$2 text=$3 arrow at
    shift 3
    fresh
    append "$file" "$text"
    at=$(lines "$file")
    run
    local wanted=()
    for arrow in "$@"; do
        wanted+=("$file:$at: $arrow")
    done
    expect_failure "$name" "${wanted[@]}"
}

fresh
run
grep -qF "table checked:" "$tmp/out" || rc=1
expect_success "the tree as it is passes, and the output names the table"

forbidden "a use of a layer outside the table (shard -> cluster) fails, by file and line" \
    src/shard/mod.rs 'use crate::cluster::RedisUrl;' "shard -> cluster is not an allowed arrow"
forbidden "a grouped use names each arrow of the group" \
    src/ws/mod.rs 'use crate::{chat::Name, io::Waker as _};' "ws -> chat" "ws -> io"

fresh
append src/cluster/wire.rs 'use crate::{'
append src/cluster/wire.rs '    io::Waker,'
append src/cluster/wire.rs '    shard::{Shard, ShardConfig},'
line=$(lines src/cluster/wire.rs)
append src/cluster/wire.rs '};'
run
expect_failure "a use over several lines is read, its arrow on its own line" \
    "src/cluster/wire.rs:$line: cluster -> shard"
# (Reported as a failed run if the allowed item is named.)
if grep -qF "cluster -> io is not" "$tmp/out"; then rc=1; else rc=0; fi
expect_success "and the allowed item of the group is not reported"

forbidden "a path in code, without a use, is an arrow" \
    src/chat/route.rs 'fn f() { crate::stats::bump(&COUNTER, 1) }' "chat -> stats"
# shellcheck disable=SC2016 # the backquotes are Rust's, not the shell's
forbidden "a doc link is an arrow" \
    src/net/mod.rs '/// Registered with [`crate::io::EpollReactor`].' "net -> io"
forbidden "test files follow the same table" \
    src/ws/tests.rs 'use crate::shard::Shard;' "ws -> shard"
forbidden "super:: climbing out of the layer is an arrow" \
    src/cluster/session/rooms.rs 'use super::super::super::shard::Shard;' "cluster -> shard"

fresh
append src/peer.rs '// The shard, not crate::cluster, owns this.'
run
expect_success "a plain comment is not an arrow"

fresh
rm "$tmp/tree/src/peer.rs"
run
expect_failure "a layer of the table that is missing fails" "layer 'peer' of the table is missing"

fresh
rm -r "$tmp/tree/src/net"
run
expect_failure "a missing layer directory fails" "layer 'net' of the table is missing"

fresh
printf '//! A layer nobody declared.\n' >"$tmp/tree/src/extra.rs"
run
expect_failure "a file in no layer of the table fails" "src/extra.rs: layer 'extra' is not in the table"

fresh
table "\[net\]=''" "[net]='io'"
run
expect_failure "a cycle in the table fails, naming it (the code need not use the arrows)" \
    "the table has a cycle:" "net -> io"

fresh
table "\[stats\]=''" "[stats]='main'"
run
expect_failure "a layer naming main ('*') closes a cycle through it" \
    "the table has a cycle: stats -> main -> stats"

fresh
append src/chat/names.rs 'fn now() -> std::time::Instant { std::time::Instant::now() }'
run
expect_failure "chat/ reading the clock fails" "src/chat/ must stay pure" "Instant::now"

fresh
append src/shard/mod.rs 'fn f() { unsafe { std::hint::unreachable_unchecked() } }'
run
expect_failure "unsafe outside io/ fails" "unsafe code outside src/io/" "src/shard/mod.rs"

echo
echo "$passed passed, $failed failed"
((failed == 0))
