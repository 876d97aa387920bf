#!/usr/bin/env bash
# Tests for scripts/tune-kernel.sh, against a fake sysctl tree (WSCHAT_SYSCTL_ROOT) and a
# temporary state directory (--state): the real kernel is never touched and root is not needed.
#
#   scripts/tune-kernel-test.sh
#
# One line per check, then "N passed, M failed"; exits 1 if any check failed. Takes about a
# second. A write that does not stick is simulated two ways: a sysctl file that is a symlink to
# /dev/null (takes every write, always reads back empty), and an `sh` ahead on PATH that does
# nothing (tune-kernel.sh writes with `sh -c`); the same kind of `sh` records the state file as
# it was at the first write, which is how "saved before anything changed" is checked.
set -euo pipefail

script=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tune-kernel.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tune-kernel-test.XXXXXX")
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
sys=$tmp/sys state_dir=$tmp/state state=$tmp/state/saved
passed=0 failed=0

ok() { echo "ok   $1"; passed=$((passed + 1)); }
# fail NAME DETAIL...: a failed check, with the script's output under it.
fail() {
    echo "FAIL $1"
    shift
    printf '       %s\n' "$@"
    sed 's/^/       | /' "$tmp/out"
    failed=$((failed + 1))
}
# check NAME CONDITION...: CONDITION is a command; ok if it succeeds.
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else fail "$name" "expected: $*"; fi
}

# fresh: a fake tree with the kernel's usual values (the port range with the kernel's tab) and
# an empty state directory, mode 0700.
fresh() {
    rm -rf "$sys" "$state_dir" "$tmp/seen"
    mkdir -p "$sys/net/core" "$sys/net/ipv4" "$sys/fs"
    mkdir -m 0700 "$state_dir"
    echo 4096 >"$sys/net/core/somaxconn"
    echo 2048 >"$sys/net/ipv4/tcp_max_syn_backlog"
    printf '32768\t60999\n' >"$sys/net/ipv4/ip_local_port_range"
    echo 100000 >"$sys/fs/file-max"
    echo 1048576 >"$sys/fs/nr_open"
}
# tree: every file in the fake tree with its value, tabs as spaces (as the script compares).
tree() {
    (cd "$sys" && find . \( -type f -o -type l \) | sort | while IFS= read -r f; do
        printf '%s=%s\n' "${f#./}" "$(tr -s '\t ' ' ' <"$f")"
    done)
}
value() { tr -s '\t ' ' ' <"$sys/$1"; }
# tk ARG...: run tune-kernel.sh on the fake tree; output in $tmp/out, exit status in $rc.
tk() {
    rc=0
    WSCHAT_SYSCTL_ROOT=$sys bash "$script" "$@" >"$tmp/out" 2>&1 || rc=$?
}
said() { grep -qF -- "$1" "$tmp/out"; }
# refused NAME ARG...: tune-kernel.sh ARG... exits 1, says WHY (the last argument), and the
# fake tree is as it was.
refused() {
    local name=$1 why=${*: -1} before
    before=$(tree)
    tk "${@:2:$#-2}"
    if ((rc != 1)); then
        fail "$name" "exit $rc, expected 1"
    elif ! said "$why"; then
        fail "$name" "output does not say: $why"
    elif [[ $(tree) != "$before" ]]; then
        fail "$name" "the tree changed:" "$(diff <(echo "$before") <(tree) || true)"
    else
        ok "$name"
    fi
}
# plant LINE...: a state file with a header and LINE... (as apply writes it, mode 0600).
plant() {
    printf '%s\n' "# planted" "$@" >"$state"
    chmod 0600 "$state"
}

# Stand-ins for sh on PATH: "record" copies the state file at the first write, then writes;
# "ignore" writes nothing.
mkdir -p "$tmp/record" "$tmp/ignore"
cat >"$tmp/record/sh" <<'EOF'
#!/bin/bash
[[ -e $TK_SEEN ]] || cp "$TK_STATE" "$TK_SEEN" 2>/dev/null || echo "(no state file)" >"$TK_SEEN"
exec /bin/sh "$@"
EOF
printf '#!/bin/bash\nexit 0\n' >"$tmp/ignore/sh"
chmod +x "$tmp/record/sh" "$tmp/ignore/sh"

old_values="net.core.somaxconn=4096
net.ipv4.tcp_max_syn_backlog=2048
net.ipv4.ip_local_port_range=32768 60999
fs.file-max=100000"

# --- apply, then restore ---
fresh
before=$(tree)
rc=0
TK_STATE=$state TK_SEEN=$tmp/seen PATH=$tmp/record:$PATH WSCHAT_SYSCTL_ROOT=$sys \
    bash "$script" apply --state "$state" >"$tmp/out" 2>&1 || rc=$?
check "apply exits 0" test "$rc" = 0
check "apply raises somaxconn, tcp_max_syn_backlog, the port range and file-max" \
    test "$(value net/core/somaxconn) $(value net/ipv4/tcp_max_syn_backlog) $(value net/ipv4/ip_local_port_range) $(value fs/file-max)" \
    = "65535 65535 1024 65535 2097152"
check "apply leaves a value already high enough (nr_open)" test "$(value fs/nr_open)" = 1048576
check "apply saved the old values before its first write" test "$(grep -v '^#' "$tmp/seen")" = "$old_values"
check "the state file holds exactly the old values of what changed" test "$(grep -v '^#' "$state")" = "$old_values"
check "the state file is mode 600" test "$(stat -c %a "$state")" = 600
check "no temporary file is left in the state directory" test "$(find "$state_dir" -type f | wc -l)" = 1

tk restore --state "$state"
check "restore exits 0" test "$rc" = 0
check "restore puts every value back exactly" test "$(tree)" = "$before"
check "restore removes the state file" test ! -e "$state"
tk restore --state "$state"
check "a second restore has nothing to do and exits 0" test "$rc:$(said 'nothing to restore' && echo y)" = "0:y"

# --- a second apply keeps the first saved values ---
fresh
tk apply --state "$state"
echo 1000 >"$sys/net/core/somaxconn"   # lowered by someone after the first apply
echo 5000 >"$sys/fs/nr_open"           # not changed by the first apply, lowered since
tk apply --state "$state"
check "a second apply exits 0 and says it keeps the saved values" \
    test "$rc:$(said 'keeping the old values saved in it' && echo y)" = "0:y"
check "a second apply keeps the first saved somaxconn (4096, not 1000)" \
    test "$(grep '^net.core.somaxconn=' "$state")" = net.core.somaxconn=4096
check "a second apply adds a key it changes for the first time (nr_open=5000)" \
    grep -qx 'fs.nr_open=5000' "$state"
tk restore --state "$state"
check "restore after two applies puts back the values from before the first" \
    test "$rc $(value net/core/somaxconn) $(value fs/nr_open)" = "0 4096 5000"

# --- what restore refuses (nothing is written in each case) ---
fresh
plant "net.core.somaxconn=1" "kernel.core_pattern=|/tmp/x"
refused "restore refuses kernel.core_pattern, naming the line" \
    restore --state "$state" "line 3: kernel.core_pattern is not a key apply writes"
check "the refused file creates no kernel/core_pattern" test ! -e "$sys/kernel/core_pattern"
check "the refused file is kept" test -e "$state"
plant "net.ipv4.tcp_syncookies=0"
refused "restore refuses a network key apply does not write" \
    restore --state "$state" "line 2: net.ipv4.tcp_syncookies is not a key apply writes"
plant "net/core/somaxconn=1"
refused "restore refuses a key spelt as a path (only the dotted names are on the list)" \
    restore --state "$state" "is not a key apply writes"
plant "net.core.somaxconn=1" "net.core.somaxconn=2"
refused "restore refuses a key listed twice" restore --state "$state" "line 3: net.core.somaxconn a second time"
plant "net.core.somaxconn 1"
refused "restore refuses a line that is not KEY=VALUE" restore --state "$state" "line 2: not KEY=VALUE"
for bad in "net.core.somaxconn=-1" "net.core.somaxconn=1 2" "net.core.somaxconn=012" \
    "net.core.somaxconn=" "net.core.somaxconn=1;reboot" "net.core.somaxconn=\$(id)" \
    "fs.file-max=9223372036854775808" "net.core.somaxconn=1"$'\r' \
    "net.ipv4.ip_local_port_range=1024" "net.ipv4.ip_local_port_range=1024 65535 1" \
    "net.ipv4.ip_local_port_range=60999 32768" "net.ipv4.ip_local_port_range=0 65535" \
    "net.ipv4.ip_local_port_range=1024 65536" "net.ipv4.ip_local_port_range=1024,65535"; do
    plant "net.ipv4.tcp_max_syn_backlog=1" "$bad"
    refused "restore refuses a malformed value: $(printf %q "$bad")" \
        restore --state "$state" "line 3: "
done
plant "fs.file-max=9223372036854775807" "net.ipv4.ip_local_port_range=1 65535"
tk restore --state "$state"
check "restore accepts the largest values of each form" \
    test "$rc $(value fs/file-max) $(value net/ipv4/ip_local_port_range)" = "0 9223372036854775807 1 65535"

# --- where the state may live ---
fresh
plant "net.core.somaxconn=1"
ln -s "$state" "$state_dir/link"
refused "restore refuses a symlinked state file" restore --state "$state_dir/link" "is a symlink"
rm "$state_dir/link"
ln -s "$tmp/elsewhere" "$state_dir/link"
refused "apply refuses a state path that is a dangling symlink" apply --state "$state_dir/link" "is a symlink"
check "apply did not write through the symlink" test ! -e "$tmp/elsewhere"
rm "$state_dir/link"
ln -s "$state_dir" "$tmp/dirlink"
refused "restore refuses a state directory that is a symlink" \
    restore --state "$tmp/dirlink/saved" "state directory $tmp/dirlink is a symlink"
for mode in 0770 0720 0757 1777; do
    chmod "$mode" "$state_dir"
    refused "restore refuses a state directory of mode $mode" restore --state "$state" "group or others may write it"
    refused "apply refuses a state directory of mode $mode" apply --state "$state" "group or others may write it"
done
chmod 0755 "$state_dir"
tk restore --state "$state"
check "a state directory of mode 0755 is accepted (others may read, not write)" test "$rc" = 0
plant "net.core.somaxconn=1"
chmod 0620 "$state"
refused "restore refuses a group-writable state file" restore --state "$state" "group or others may write it"
plant "net.core.somaxconn=1"
refused "restore refuses a state file in a missing directory" \
    restore --state "$tmp/missing/saved" "is not a directory"
mkdir "$state_dir/sub"
refused "restore refuses a state file that is a directory" restore --state "$state_dir/sub" "is not a regular file"
if [[ $(id -u) == 0 ]]; then
    plant "net.core.somaxconn=1"
    chown 65534 "$state"
    refused "restore refuses a state file owned by another user" restore --state "$state" "not to us"
    plant "net.core.somaxconn=1"
    chown 65534 "$state_dir"
    refused "restore refuses a state directory owned by another user" restore --state "$state" "not to us"
    chown 0 "$state_dir"
fi

# --- writes that do not stick, values that do not parse ---
fresh
before=$(tree)
rc=0
PATH=$tmp/ignore:$PATH WSCHAT_SYSCTL_ROOT=$sys bash "$script" apply --state "$state" >"$tmp/out" 2>&1 || rc=$?
if ((rc == 1)) && said "net.core.somaxconn did not stick" && said "fs.file-max did not stick"; then
    ok "apply reports each write that did not stick, by key, and exits 1"
else
    fail "apply reports each write that did not stick, by key, and exits 1" "exit $rc"
fi
check "the old values were saved even so" test "$(grep -v '^#' "$state")" = "$old_values"
tk restore --state "$state"
check "and restore after it leaves the tree as it was" test "$rc:$(tree)" = "0:$before"

fresh
plant "net.core.somaxconn=4096" "net.ipv4.tcp_max_syn_backlog=2048"
ln -sf /dev/null "$sys/net/ipv4/tcp_max_syn_backlog"
tk restore --state "$state"
if ((rc == 1)) && said "net.ipv4.tcp_max_syn_backlog did not stick" && said "$state kept"; then
    ok "restore reports a write that did not stick, by key, exits 1 and keeps the state file"
else
    fail "restore reports a write that did not stick, by key, exits 1 and keeps the state file" "exit $rc"
fi
check "the state file is still there" test -e "$state"

fresh
echo "garbage" >"$sys/net/core/somaxconn"
refused "apply refuses a sysctl that reads as no number, before changing anything" \
    apply --state "$state" "net.core.somaxconn reads garbage"
check "and saves no state" test ! -e "$state"

fresh
before=$(tree)
tk apply --dry-run --state "$state"
check "apply --dry-run writes nothing and saves nothing" \
    test "$rc:$(tree):$(test -e "$state" && echo saved)" = "0:$before:"


# --- show: the SYN retransmission schedule this kernel runs, and the pre-6.5 one ---
fresh
echo 1 >"$sys/net/ipv4/tcp_syncookies"
echo 0 >"$sys/net/ipv4/tcp_abort_on_overflow"
echo 6 >"$sys/net/ipv4/tcp_syn_retries"
echo 4 >"$sys/net/ipv4/tcp_syn_linear_timeouts"
tk show
# fold may break a line anywhere: compare with the newlines and indents taken out
flat() { tr -s '\n ' '  ' <"$tmp/out"; }
check "show, linear timeouts 4: 1 s waits, then doubling; 10 retransmissions; fails at 131 s" \
    grep -qF "retransmits its SYN 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s after the first one and connect() fails (ETIMEDOUT) at about 131 s" <(flat)
check "show, linear timeouts 4: says what kernels before 6.5 did" \
    grep -qF "Kernels before 6.5 (and this one with tcp_syn_linear_timeouts=0) double every wait from 1 s: retransmissions at 1, 3, 7, 15, 31, 63 s, ETIMEDOUT at about 127 s" <(flat)
echo 0 >"$sys/net/ipv4/tcp_syn_linear_timeouts"
tk show
check "show, linear timeouts 0: the doubling schedule, 127 s" \
    grep -qF "retransmits its SYN 1, 3, 7, 15, 31, 63 s after the first one and connect() fails (ETIMEDOUT) at about 127 s" <(flat)
rm "$sys/net/ipv4/tcp_syn_linear_timeouts"
tk show
check "show, no tcp_syn_linear_timeouts (before 6.5): the doubling schedule, and why" \
    grep -qF "this kernel has no tcp_syn_linear_timeouts, added in Linux 6.5" <(flat)
echo
echo "$passed passed, $failed failed"
((failed == 0))
