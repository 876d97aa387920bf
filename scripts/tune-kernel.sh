#!/usr/bin/env bash
# Kernel settings that bound a connection storm, shown, raised and put back.
#
#   scripts/tune-kernel.sh show                      current values and what they mean
#   scripts/tune-kernel.sh apply [--profile bench]   raise them; each old value is saved first
#   scripts/tune-kernel.sh restore                   put back exactly what `apply` changed
#
# Options (any verb):
#   --dry-run        print what would be written, write nothing
#   --netns NAME     the network sysctls of network namespace NAME (ip netns) instead of the
#                    current one; fs.* are global and are left alone with --netns
#   --state FILE     where `apply` saves old values and `restore` reads them
#                    (default /run/wschat-tune-kernel/<netns or "default">.saved)
#   --profile NAME   `apply` only: bench (the default, and the only profile)
#   -h, --help       this text
#
# The bench profile only ever raises a value (a setting already higher is left alone):
#   net.core.somaxconn            65535   cap on every listen() backlog (accept queue)
#   net.ipv4.tcp_max_syn_backlog  65535   SYN queue bound, used only with syncookies off
#   net.ipv4.ip_local_port_range  1024 65535   ephemeral ports per (source, destination) pair
#   fs.file-max                   2097152  open files, system wide
#   fs.nr_open                    1048576  the largest RLIMIT_NOFILE a process may be given
# net.* are per network namespace: `apply` changes the namespace it runs in (or --netns).
#
# The state file. Root writes whatever it lists back into the kernel, so only we may write it:
#   - The default directory is /run/wschat-tune-kernel, made with `install -d -m 0700`. /run,
#     not /var/lib: it is root's, and a tmpfs emptied at boot, when the kernel's values go back
#     to their defaults too, so a saved value never outlives the change it undoes. (Without
#     /run, pass --state.) It is refused if it is a symlink, not a directory, not owned by the
#     user running the script, or not mode 0700 or stricter.
#   - --state FILE: its directory must be ours, not a symlink, not group or world writable.
#   - The state file itself (if it exists): not a symlink, a regular file, ours, not group or
#     world writable.
#   - `apply` saves the old values (a temporary file in that directory, renamed over the state
#     file) before it changes anything. An `apply` while a state file exists keeps the values
#     saved in it, the ones from before the first `apply`, and adds only keys it changes for
#     the first time.
#   - `restore` accepts only the keys `apply` writes (with --netns, only net.*), each once, with
#     a value of its form: a number, or two port numbers for ip_local_port_range; lines are
#     KEY=VALUE, "# ..." or blank. It checks the whole file before writing anything and names
#     the first bad line.
#   - Older versions kept the file as /var/tmp/wschat-tune-kernel.<netns>.saved; that is no
#     longer read (anyone could have written it): read such a file yourself before using it.
#
# Every value written is read back; one that reads back different is an error naming the key.
#
# For tests: WSCHAT_SYSCTL_ROOT (default /proc/sys) is the directory sysctls are read and
# written under (net.core.somaxconn is $WSCHAT_SYSCTL_ROOT/net/core/somaxconn);
# scripts/tune-kernel-test.sh points it at a fake tree, so no root and no real kernel.
#
# Exit codes: 0 ok, 1 a write failed (not root, read-only /proc/sys in a container) or did not
# stick, or the state file or its directory was refused, 2 usage.
set -euo pipefail
umask 077

die() { echo "tune-kernel.sh: $1" >&2; exit "${2:-2}"; }
usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

verb='' dry=false netns='' state='' profile=bench
while (($#)); do
    case $1 in
        show | apply | restore) [[ -z $verb ]] || die "one verb only"; verb=$1 ;;
        --dry-run) dry=true ;;
        --netns) netns=${2:?--netns needs a name}; shift ;;
        --state) state=${2:?--state needs a file}; shift ;;
        --profile) profile=${2:?--profile needs a name}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
[[ -n $verb ]] || { usage >&2; exit 2; }
[[ $profile == bench ]] || die "unknown profile '$profile' (only: bench)"
SYSCTL_ROOT=${WSCHAT_SYSCTL_ROOT:-/proc/sys}
[[ -d $SYSCTL_ROOT ]] || die "WSCHAT_SYSCTL_ROOT=$SYSCTL_ROOT is not a directory"

NET_KEYS=(net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.ip_local_port_range)
FS_KEYS=(fs.file-max fs.nr_open)
declare -A WANT=(
    [net.core.somaxconn]=65535
    [net.ipv4.tcp_max_syn_backlog]=65535
    [net.ipv4.ip_local_port_range]="1024 65535"
    [fs.file-max]=2097152
    [fs.nr_open]=1048576
)

if [[ -n $netns ]]; then
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$netns" ||
        die "no network namespace '$netns' (ip netns list)"
    NS=(ip netns exec "$netns")
else
    NS=()
fi
# The keys `apply` writes, and so the only ones `restore` accepts: fs.* are global, never
# written for a namespace.
KEYS=("${NET_KEYS[@]}")
[[ -n $netns ]] || KEYS+=("${FS_KEYS[@]}")

STATE_DIR=/run/wschat-tune-kernel
default_state=false
if [[ -z $state ]]; then
    state=$STATE_DIR/${netns:-default}.saved default_state=true
fi

path_of() { echo "$SYSCTL_ROOT/${1//.//}"; }
# Read a sysctl (in the target namespace for net.*); tabs become single spaces.
get() {
    local key=$1
    if [[ $key == net.* && ${#NS[@]} -gt 0 ]]; then
        "${NS[@]}" cat "$(path_of "$key")" 2>/dev/null | tr -s '\t ' ' '
    else
        tr -s '\t ' ' ' 2>/dev/null <"$(path_of "$key")"
    fi
}
# put KEY VALUE OLD: write VALUE, then read it back (tabs and spaces as in get).
put() {
    local key=$1 value=$2
    if $dry; then echo "would set $key = $value${netns:+ (netns $netns)}"; return 0; fi
    local out now
    if [[ $key == net.* && ${#NS[@]} -gt 0 ]]; then
        # shellcheck disable=SC2016 # $1 and $2 are the inner shell's
        out=$("${NS[@]}" sh -c 'printf "%s\n" "$2" > "$1"' _ "$(path_of "$key")" "$value" 2>&1) || {
            echo "tune-kernel.sh: cannot write $key in netns $netns: $out" >&2; return 1; }
    else
        out=$(sh -c 'printf "%s\n" "$2" > "$1"' _ "$(path_of "$key")" "$value" 2>&1) || {
            echo "tune-kernel.sh: cannot write $key: $out" >&2; return 1; }
    fi
    now=$(get "$key") || now="(unreadable)"
    if [[ $now != "$value" ]]; then
        echo "tune-kernel.sh: $key did not stick: wrote '$value', it reads back '$now'${netns:+ (netns $netns)}" >&2
        return 1
    fi
    echo "set $key = $value (was $3)${netns:+ (netns $netns)}"
}

# Why writes would fail, or nothing. A test tree (WSCHAT_SYSCTL_ROOT) needs no root.
write_problem() {
    [[ $SYSCTL_ROOT == /proc/sys ]] || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "not root: run with sudo (reading works, writing needs root)"
        return
    fi
    local opts
    opts=$(findmnt -no OPTIONS /proc/sys 2>/dev/null || true)
    if [[ ,$opts, == *,ro,* ]]; then
        echo "/proc/sys is mounted read-only: a container without privileges; set these on the host, or run the container with --sysctl net.core.somaxconn=... (net.* only), or --privileged"
        return
    fi
    if [[ -r /proc/1/cgroup ]] && grep -qaE 'docker|containerd|kubepods|lxc' /proc/1/cgroup 2>/dev/null; then
        echo "(inside a container: net.* are this container's namespace; fs.* are the host's and may be refused)"
    fi
}

# Is value a (first number of value) >= b?
ge() { local a=${1%% *} b=${2%% *}; ((a >= b)); }
# For the port range, wider means a lower low end or higher high end.
wants_change() {
    local key=$1 cur=$2 want=$3
    if [[ $key == net.ipv4.ip_local_port_range ]]; then
        local clo=${cur%% *} chi=${cur##* } wlo=${want%% *} whi=${want##* }
        ((wlo < clo || whi > chi))
    else
        ge "$cur" "$want" && return 1
        return 0
    fi
}
merged_range() {
    local cur=$1 want=$2 clo=${1%% *} chi=${1##* } wlo=${2%% *} whi=${2##* }
    echo "$((wlo < clo ? wlo : clo)) $((whi > chi ? whi : chi))"
}

# is_number V: a number as the kernel prints it (no sign, no leading zero), at most LONG_MAX
# (fs.file-max is an unsigned long capped there), so bash arithmetic on it cannot overflow.
is_number() {
    [[ $1 =~ ^(0|[1-9][0-9]{0,18})$ ]] || return 1
    ((${#1} < 19)) && return 0
    local high=${1:0:18} low=${1:18}
    ((high < 922337203685477580 || (high == 922337203685477580 && low <= 7)))
}
# valid_value KEY VALUE: VALUE has the form KEY takes (as get prints it).
valid_value() {
    local key=$1 value=$2
    if [[ $key == net.ipv4.ip_local_port_range ]]; then
        [[ $value =~ ^([0-9]+)\ ([0-9]+)$ ]] || return 1
        local lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
        is_number "$lo" && is_number "$hi" && ((lo >= 1 && lo <= hi && hi <= 65535))
    else
        is_number "$value"
    fi
}
is_key() {
    local k
    for k in "${KEYS[@]}"; do [[ $1 == "$k" ]] && return 0; done
    return 1
}

# check_owned PATH WHAT MASK WHY: PATH is no symlink, is ours, and has no mode bit of MASK
# (octal); WHY says what a bit in MASK means.
check_owned() {
    local path=$1 what=$2 mask=$3 uid mode
    [[ ! -L $path ]] || die "$what $path is a symlink: refusing it" 1
    read -r uid mode < <(stat -c '%u %a' -- "$path") || die "cannot stat $path" 1
    ((uid == $(id -u))) || die "$what $path belongs to uid $uid, not to us (uid $(id -u)): refusing it" 1
    (((8#$mode & 8#$mask) == 0)) || die "$what $path has mode $mode: $4; refusing it" 1
}
# check_state CREATE: refuses a state directory or file others could write (exit 1); with
# CREATE true, makes the default directory if it is missing.
check_state() {
    local dir
    dir=$(dirname -- "$state")
    if $default_state && [[ ! -e $dir && ! -L $dir ]]; then
        $1 || return 0
        install -d -m 0700 -- "$dir" || die "cannot create $dir (use --state FILE)" 1
    fi
    [[ ! -L $dir ]] || die "state directory $dir is a symlink: refusing it" 1
    [[ -d $dir ]] || die "state directory $dir is not a directory" 1
    if $default_state; then
        check_owned "$dir" "state directory" 077 "it must be 0700 or stricter"
    else
        check_owned "$dir" "state directory" 022 "group or others may write it"
    fi
    if [[ -e $state || -L $state ]]; then
        [[ -L $state || -f $state ]] || die "state file $state is not a regular file" 1
        check_owned "$state" "state file" 022 "group or others may write it"
    fi
}

# read_state: checks the whole state file and fills SAVED_KEYS (file order) and SAVED[key];
# the first bad line is an error (exit 1) and nothing has been written.
SAVED_KEYS=()
declare -A SAVED=()
read_state() {
    local line n=0 key value
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        [[ -z $line || $line == \#* ]] && continue
        [[ $line == *=* ]] || bad_line "$n" "not KEY=VALUE: $(printf %q "$line")"
        key=${line%%=*} value=${line#*=}
        is_key "$key" || bad_line "$n" "$(printf %q "$key") is not a key apply writes (${KEYS[*]})"
        [[ -z ${SAVED[$key]+set} ]] || bad_line "$n" "$key a second time"
        valid_value "$key" "$value" || bad_line "$n" "$(printf %q "$value") is not a value for $key"
        SAVED[$key]=$value
        SAVED_KEYS+=("$key")
    done <"$state"
}
bad_line() { die "$state line $1: $2; refusing the file, nothing written" 1; }

# save_state LINE...: the state file becomes LINE... (KEY=VALUE), atomically: a temporary
# file in the same directory, renamed over it.
save_state() {
    local tmp
    tmp=$(mktemp -- "$(dirname -- "$state")/.tune-kernel.XXXXXX") ||
        die "cannot create a temporary file next to $state; nothing changed" 1
    if ! printf '%s\n' "# tune-kernel.sh: values from before apply, netns=${netns:-default}; $(date -u +%FT%TZ)" \
        "$@" >"$tmp" || ! mv -fT -- "$tmp" "$state"; then
        rm -f -- "$tmp"
        die "cannot save old values to $state; nothing changed" 1
    fi
}

# syn_times RETRIES LINEAR: prints "TIMES|FAIL": the seconds after the first SYN at which a
# client whose SYNs are all dropped retransmits, and when connect() fails, for the usual 1 s
# initial timeout (net/ipv4/tcp_timer.c: tcp_retransmit_timer doubles the wait only once more
# than LINEAR timeouts have passed; tcp_write_timeout gives up after RETRIES + LINEAR
# retransmissions, or once the time RETRIES doubling waits would take has passed).
syn_times() {
    local retries=$1 linear=$2 rto=1 t=0 sent=0 times=() limit list
    limit=$((retries <= 6 ? (2 << retries) - 1 : 127 + (retries - 6) * 120))
    while :; do
        t=$((t + rto))
        ((sent < retries + linear && (t < limit || sent == 0))) || break
        sent=$((sent + 1))
        times+=("$t")
        ((sent <= linear)) || rto=$((rto * 2 > 120 ? 120 : rto * 2))
    done
    list=$(printf '%s, ' "${times[@]}")
    printf '%s|%s\n' "${list%, }" "$t"
}

# syn_schedule RETRIES LINEAR: the schedule this kernel runs, in words, and the one kernels
# before 6.5 ran. LINEAR is tcp_syn_linear_timeouts, empty where the kernel has no such
# sysctl (before Linux 6.5: every wait doubles).
syn_schedule() {
    local retries=$1 linear=${2:-0} now old
    now=$(syn_times "$retries" "$linear") old=$(syn_times "$retries" 0)
    {
        printf 'On this kernel (%s) a client whose SYNs are dropped retransmits its SYN %s s after the first one and connect() fails (ETIMEDOUT) at about %s s. ' \
            "$(uname -r)" "${now%|*}" "${now#*|}"
        if ((linear > 0)); then
            printf 'That is net.ipv4.tcp_syn_linear_timeouts=%s (Linux 6.5+): %s linear timeouts, so the first %s waits are 1 s each, then the wait doubles (2, 4, 8 s, at most 120 s); the %s linear retransmissions come on top of tcp_syn_retries=%s. ' \
                "$linear" "$linear" "$((linear + 1))" "$linear" "$retries"
            printf 'Kernels before 6.5 (and this one with tcp_syn_linear_timeouts=0) double every wait from 1 s: retransmissions at %s s, ETIMEDOUT at about %s s.\n' \
                "${old%|*}" "${old#*|}"
        else
            local why="tcp_syn_linear_timeouts=0 here, so no linear waits"
            [[ -n $2 ]] || why="this kernel has no tcp_syn_linear_timeouts, added in Linux 6.5"
            printf 'Each wait doubles from 1 s (at most 120 s), tcp_syn_retries=%s times: the schedule of every kernel before 6.5 (%s). ' "$retries" "$why"
            printf 'Linux 6.5+ with tcp_syn_linear_timeouts=N (default 4) waits 1 s N+1 times before the doubling starts, and adds N retransmissions to tcp_syn_retries.\n'
        fi
    } | fold -s -w 88 | sed 's/^/    /; s/ *$//'
}

show() {
    local key
    echo "Kernel settings for wschat${netns:+ (network namespace $netns)}; kernel $(uname -r)"
    echo
    printf '  %-34s %s\n' "setting" "value"
    for key in "${NET_KEYS[@]}" net.ipv4.tcp_syncookies net.ipv4.tcp_abort_on_overflow \
        net.ipv4.tcp_syn_retries net.ipv4.tcp_synack_retries net.ipv4.tcp_syn_linear_timeouts \
        net.ipv4.tcp_migrate_req "${FS_KEYS[@]}"; do
        printf '  %-34s %s\n' "$key" "$(get "$key" || true)"
    done | sed 's/ $/ (not present on this kernel)/'
    local hard soft
    hard=$(ulimit -Hn) soft=$(ulimit -Sn)
    printf '  %-34s soft %s, hard %s (this shell)\n' "RLIMIT_NOFILE" "$soft" "$hard"
    local somax syncook abort lin retries
    somax=$(get net.core.somaxconn) syncook=$(get net.ipv4.tcp_syncookies)
    abort=$(get net.ipv4.tcp_abort_on_overflow) lin=$(get net.ipv4.tcp_syn_linear_timeouts || true)
    retries=$(get net.ipv4.tcp_syn_retries || echo 6)
    cat <<EOF

How the kernel queues a connection (net/ipv4/inet_connection_sock.c, tcp_input.c):
  - listen(fd, backlog) gets min(backlog, net.core.somaxconn) = min(backlog, $somax). That
    number bounds the ACCEPT queue (handshake complete, waiting for accept()): wschat prints
    it at start-up as backlog=<granted> (requested N, somaxconn M). \`ss -lnt\` shows it as
    Send-Q of the listener and the current length as Recv-Q.
  - The SYN queue (half-open connections, SYN-ACK sent) is bounded by the same
    min(backlog, somaxconn). net.ipv4.tcp_max_syn_backlog matters only with
    tcp_syncookies=0 (the kernel then drops SYNs once the SYN queue is 3/4 of it).
  - tcp_syncookies=$syncook: with 1 (the default), a full SYN queue answers with a cookie
    instead of dropping the SYN; with 2 always cookies; with 0, drops.
  - A SYN that arrives while the ACCEPT queue is full is dropped whatever the cookies
    setting (TcpExtListenOverflows + TcpExtListenDrops in \`nstat -az\`).
$(syn_schedule "$retries" "$lin")
  - The client's final ACK that arrives while the accept queue is full: tcp_abort_on_overflow=$abort.
    0 ignores it (the client believes it is connected; the server re-sends the SYN-ACK
    and the connection enters the queue later, or the client's first data is what gets it in);
    1 answers it with a RST (the client sees ECONNRESET at once). SYNs are still dropped.
  - Ephemeral ports: each (source IP, destination IP:port) pair has
    $(get net.ipv4.ip_local_port_range | awk '{print $2-$1+1}') ports (ip_local_port_range); bench-client --source-ips N multiplies that.

File descriptors: a script cannot raise its caller's limits. wschat and bench-client raise
their soft limit to the hard one at start and print it (fd-limit=soft/hard). The hard limit
here is $hard; to raise it: /etc/security/limits.conf ("* hard nofile 1048576", then log in
again), systemd LimitNOFILE=1048576 for a service, \`ulimit -Hn N\` as root in the shell
that starts the server, or docker run --ulimit nofile=N:N. It cannot exceed fs.nr_open
($(get fs.nr_open)).
EOF
    local problem
    problem=$(write_problem)
    echo
    if [[ -z $problem ]]; then
        echo "Writable: yes (root, /proc/sys writable). \`apply --dry-run\` shows what would change."
    else
        echo "Writable: $problem"
    fi
}

apply() {
    local problem create=true
    problem=$(write_problem)
    if [[ -n $problem && $problem != "("* ]] && ! $dry; then die "$problem" 1; fi
    ! $dry || create=false
    check_state "$create"
    local earlier=false
    if [[ -e $state ]]; then
        read_state
        earlier=true
        echo "$state exists (an apply not yet restored): keeping the old values saved in it"
    fi
    local key cur want plan=() new=()
    local -A to=() from=()
    for key in "${KEYS[@]}"; do
        cur=$(get "$key") || { echo "skip $key: not present"; continue; }
        valid_value "$key" "$cur" || die "$key reads $(printf %q "$cur"), not a value of its form; nothing changed" 1
        want=${WANT[$key]}
        if wants_change "$key" "$cur" "$want"; then
            [[ $key == net.ipv4.ip_local_port_range ]] && want=$(merged_range "$cur" "$want")
            plan+=("$key")
            to[$key]=$want from[$key]=$cur
            [[ -n ${SAVED[$key]+set} ]] || new+=("$key=$cur")
        else
            echo "keep $key = $cur (already >= $want)"
        fi
    done
    if ! $dry && ((${#new[@]})); then
        local old=()
        for key in "${SAVED_KEYS[@]}"; do old+=("$key=${SAVED[$key]}"); done
        save_state "${old[@]}" "${new[@]}"
        echo "old values saved in $state before any change (restore puts them back)"
    fi
    local rc=0
    for key in "${plan[@]}"; do
        put "$key" "${to[$key]}" "${from[$key]}" || rc=1
    done
    ((${#plan[@]})) || $dry || echo "nothing to change"
    if $earlier; then echo "restore puts back the values from before the first apply"; fi
    return $rc
}

restore() {
    check_state false
    if [[ ! -e $state ]]; then
        echo "nothing to restore: no $state (apply changed nothing, or restore already ran)"
        return 0
    fi
    read_state
    local key rc=0
    local -A cur=()
    for key in "${SAVED_KEYS[@]}"; do
        cur[$key]=$(get "$key") || die "$key is not present${netns:+ in netns $netns}: nothing written" 1
    done
    for key in "${SAVED_KEYS[@]}"; do
        put "$key" "${SAVED[$key]}" "${cur[$key]}" || rc=1
    done
    if ! $dry; then
        if ((rc == 0)); then rm -f -- "$state"; else echo "some values were not restored; $state kept" >&2; fi
    fi
    return $rc
}

"$verb"
