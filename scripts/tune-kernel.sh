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
#                    (default /var/tmp/wschat-tune-kernel.<netns or "default">.saved)
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
# Every value written is read back; one that reads back different is an error naming the key.
#
# For tests: WSCHAT_SYSCTL_ROOT (default /proc/sys) is the directory sysctls are read and
# written under (net.core.somaxconn is $WSCHAT_SYSCTL_ROOT/net/core/somaxconn);
# scripts/tune-kernel-test.sh points it at a fake tree, so no root and no real kernel.
#
# Exit codes: 0 ok, 1 a write failed (not root, read-only /proc/sys in a container) or did not
# stick, 2 usage.
set -euo pipefail

die() { echo "tune-kernel.sh: $*" >&2; exit "${2:-2}"; }
usage() { sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

verb= dry=false netns= state= profile=bench
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
state=${state:-/var/tmp/wschat-tune-kernel.${netns:-default}.saved}

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
        ! ge "$cur" "$want"
    fi
}
merged_range() {
    local cur=$1 want=$2 clo=${1%% *} chi=${1##* } wlo=${2%% *} whi=${2##* }
    echo "$((wlo < clo ? wlo : clo)) $((whi > chi ? whi : chi))"
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
    local somax syncook abort lin
    somax=$(get net.core.somaxconn) syncook=$(get net.ipv4.tcp_syncookies)
    abort=$(get net.ipv4.tcp_abort_on_overflow) lin=$(get net.ipv4.tcp_syn_linear_timeouts || true)
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
    setting (TcpExtListenOverflows + TcpExtListenDrops in \`nstat -az\`); the client
    retransmits it after 1 s, then 2 s, 4 s, ... (tcp_syn_retries).${lin:+
    tcp_syn_linear_timeouts=$lin: the first $lin retransmissions come 1 s apart (Linux 6.x),
    then the timeout doubles.}
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
    [[ -z $problem ]] && echo && echo "Writable: yes (root, /proc/sys writable). \`apply --dry-run\` shows what would change." ||
        { echo; echo "Writable: $problem"; }
}

apply() {
    local problem keys=("${NET_KEYS[@]}")
    problem=$(write_problem)
    if [[ -n $problem && $problem != "("* ]] && ! $dry; then die "$problem" 1; fi
    [[ -n $netns ]] || keys+=("${FS_KEYS[@]}")
    if [[ -e $state ]] && ! $dry; then
        die "$state exists: a previous apply was not restored (run restore first, or remove it)" 1
    fi
    local key cur want saved=() changed=0 rc=0
    for key in "${keys[@]}"; do
        cur=$(get "$key") || { echo "skip $key: not present"; continue; }
        want=${WANT[$key]}
        if wants_change "$key" "$cur" "$want"; then
            [[ $key == net.ipv4.ip_local_port_range ]] && want=$(merged_range "$cur" "$want")
            if put "$key" "$want" "$cur"; then
                saved+=("$key=$cur"); changed=$((changed + 1))
            else
                rc=1
            fi
        else
            echo "keep $key = $cur (already >= $want)"
        fi
    done
    if ! $dry && ((${#saved[@]})); then
        printf '%s\n' "# tune-kernel.sh apply $(date -u +%FT%TZ) netns=${netns:-default}" "${saved[@]}" >"$state"
        echo "old values saved in $state (restore puts them back)"
    fi
    ((changed)) || $dry || echo "nothing to change"
    return $rc
}

restore() {
    if [[ ! -e $state ]]; then
        echo "nothing to restore: no $state (apply changed nothing, or restore already ran)"
        return 0
    fi
    local line key value cur rc=0
    while IFS= read -r line; do
        [[ $line == \#* || -z $line ]] && continue
        key=${line%%=*} value=${line#*=}
        cur=$(get "$key")
        put "$key" "$value" "$cur" || rc=1
    done <"$state"
    if ! $dry; then
        if ((rc == 0)); then rm -f "$state"; else echo "some values were not restored; $state kept" >&2; fi
    fi
    return $rc
}

"$verb"
