#!/usr/bin/env bash
# Keeps the layering of DESIGN.md ("Layers inside src/") and the invariants of src/lib.rs
# true by reading the source:
# - every path from a file under src/ to another layer, `crate::<layer>` (in a `use`, in
#   code, in a doc link, grouped as `crate::{a::X, b::Y}` over several lines or not) or
#   `super::` climbing out of the file's layer, is an arrow that must be in the table ALLOWED
#   below; test code (tests.rs, #[cfg(test)] modules) follows the same table;
# - the table has no cycle: a cycle would make "dependencies point down" meaningless,
#   whatever the code does ('*' is read as every layer but the other '*' ones, so lib and
#   main may name each other, and a layer naming either closes a cycle);
# - every layer of the table exists (src/<layer>.rs or src/<layer>/), and every file under
#   src/ belongs to a layer of the table: a layer renamed, removed or added is a change to
#   this table, made on purpose;
# - ws/ and chat/ are pure: no syscalls, sockets, clock, threads, files, processes or unsafe
#   (their tests.rs files may read the clock to get an Instant);
# - unsafe code appears only under src/io/.
# Exits non-zero and names each offending file and line (and the arrow). Plain `//` comments
# are not read; doc comments are (a doc link is a dependency too).
# scripts/check-layers-test.sh checks this script on copies of src/ with faults put in.
#
#   scripts/check-layers.sh          # check
#   scripts/check-layers.sh --list   # also list every arrow found, with how many paths make it
set -euo pipefail
cd "$(dirname "$0")/.."

list=false
case ${1-} in
    '') ;;
    --list) list=true ;;
    *) echo "check-layers: unknown option: $1 (--list shows the arrows found)" >&2; exit 2 ;;
esac

# The allowed arrows: layer -> the layers it may name ('*': any). main.rs, cli.rs and
# config.rs are the binary's edge; each other arrow points down.
table_name="DESIGN.md 'Layers inside src/' + the arrows agreed in the layering issue"
layers=(lib main cli config patterns shard cluster peer tls stats chat ws io net)
declare -A allowed=(
    [lib]='*'        # the crate root: declares every layer
    [main]='*'       # Args -> Config -> patterns::run
    [cli]='io cluster'                         # io::uring::FeatureSet, cluster::RedisUrl
    [config]='cli cluster io net tls ws'
    [patterns]='shard net io config cli stats cluster peer'
    [shard]='ws chat io net stats tls config peer'
    [cluster]='io ws chat stats peer'
    [peer]='chat'
    [tls]=''
    [stats]=''
    [chat]='ws'
    [ws]=''
    [io]='net'       # accept helpers live in net/
    [net]=''
)

status=0

# --- the table has no cycle -----------------------------------------------------------------
# A depth-first walk over the arrows; an arrow back to a layer on the current path closes a
# cycle, which is printed from that layer round to itself.
declare -A mark=()  # on-path, or finished
path=()
cycles=0
visit() {
    local layer=$1 next i cycle
    local -a targets=()
    mark[$layer]=on-path
    path+=("$layer")
    if [[ ${allowed[$layer]} == '*' ]]; then
        for next in "${layers[@]}"; do
            [[ ${allowed[$next]} == '*' ]] || targets+=("$next")
        done
    else
        read -ra targets <<<"${allowed[$layer]}"
    fi
    for next in "${targets[@]}"; do
        [[ -n ${allowed[$next]+set} ]] || continue # not a layer of the table: nothing to follow
        case ${mark[$next]-} in
            on-path)
                cycle=''
                for ((i = ${#path[@]} - 1; i >= 0; i--)); do
                    cycle="${path[i]} -> ${cycle:-$next}"
                    [[ ${path[i]} == "$next" ]] && break
                done
                echo "check-layers: the table has a cycle: $cycle"
                cycles=$((cycles + 1))
                status=1
                ;;
            finished) ;;
            *) visit "$next" ;;
        esac
    done
    unset 'path[${#path[@]}-1]'
    mark[$layer]=finished
}
for layer in "${layers[@]}"; do
    [[ -n ${mark[$layer]-} ]] || visit "$layer"
done

# --- every layer exists, every file has a layer ---------------------------------------------
for layer in "${layers[@]}"; do
    if [[ ! -f src/$layer.rs && ! -d src/$layer ]]; then
        echo "check-layers: layer '$layer' of the table is missing (no src/$layer.rs nor src/$layer/)"
        status=1
    fi
done
mapfile -t files < <(find src -name '*.rs' | LC_ALL=C sort)
if ((${#files[@]} == 0)); then
    echo "check-layers: no Rust files under src/"
    exit 1
fi
for file in "${files[@]}"; do
    rel=${file#src/}
    layer=${rel%%/*}
    layer=${layer%.rs}
    if [[ -z ${allowed[$layer]+set} ]]; then
        echo "check-layers: $file: layer '$layer' is not in the table"
        status=1
    fi
done

# --- the arrows -----------------------------------------------------------------------------
# Prints "file:line:from:to" for each path in a file that names another top-level module of
# the crate. A file's module depth says how far `super::` may climb before it leaves the
# layer: src/a.rs and src/a/mod.rs are 1 deep, src/a/b.rs 2; reaching the root with `super::`
# is read as `crate::`. (An inline module deepens a file further, so this can only err
# towards reading a path as leaving the layer when it does not; names that are not modules of
# the root are ignored, which keeps that case quiet.)
read -r -d '' arrows <<'PERL' || true
use strict;
use warnings;
my %module = map { $_ => 1 } split / /, shift @ARGV;
for my $file (@ARGV) {
    open my $fh, '<', $file or die "$file: $!";
    my @lines = <$fh>;
    close $fh;
    (my $rel = $file) =~ s{^src/}{};
    my @parts = split m{/}, $rel;
    (my $from = $parts[0]) =~ s/\.rs$//;
    my $depth = $rel =~ m{^(lib|main)\.rs$} ? 0 : @parts - ($parts[-1] eq 'mod.rs' ? 1 : 0);
    my ($text, @starts) = ('');
    for my $line (@lines) {
        my $code = $line;
        $code =~ s{(?<![:/])//(?![/!]).*}{};    # a plain comment (not ///, //!, nor a URL)
        push @starts, length $text;
        $text .= $code;
    }
    my $line_of = sub {
        my ($pos, $lo, $hi) = ($_[0], 0, $#starts);
        while ($lo < $hi) {
            my $mid = int(($lo + $hi + 1) / 2);
            if ($starts[$mid] <= $pos) { $lo = $mid } else { $hi = $mid - 1 }
        }
        return $lo + 1;
    };
    while ($text =~ m{(?<![\w\$])(crate::|(?:super::)+)}g) {
        my ($prefix, $at) = ($1, pos $text);
        my $climbs = () = $prefix =~ /super/g;
        next if $prefix ne 'crate::' && $climbs < $depth;
        my @targets;
        if (substr($text, $at, 1) eq '{') {
            # A group: its top-level items, each with where it starts.
            my ($level, $start) = (0, $at + 1);
            for (my $i = $at; $i < length $text; $i++) {
                my $c = substr $text, $i, 1;
                if ($c eq '{') { $level++ }
                elsif ($c eq '}') { $level--; }
                if (($c eq ',' && $level == 1) || $level == 0) {
                    my $item = substr $text, $start, $i - $start;
                    push @targets, [$1, $start + $-[1]] if $item =~ /^\s*(\w+)/;
                    $start = $i + 1;
                }
                last if $level == 0;
            }
        } elsif (substr($text, $at) =~ /^(\w+)/) {
            push @targets, [$1, $at];
        }
        for my $target (@targets) {
            my ($to, $pos) = @$target;
            next unless $module{$to} && $to ne $from;
            print "$file:", $line_of->($pos), ":$from:$to\n";
        }
    }
}
PERL
mapfile -t modules < <(find src -mindepth 1 -maxdepth 1 \( -name '*.rs' -o -type d \) \
    -printf '%f\n' | sed 's/\.rs$//' | LC_ALL=C sort -u)
checked=0
forbidden=0
declare -A found=()
while IFS=: read -r file line from to; do
    checked=$((checked + 1))
    found["$from -> $to"]=$((${found["$from -> $to"]-0} + 1))
    ok=${allowed[$from]-}
    if [[ $ok == '*' || " $ok " == *" $to "* ]]; then
        continue
    fi
    echo "check-layers: $file:$line: $from -> $to is not an allowed arrow"
    forbidden=$((forbidden + 1))
    status=1
done < <(perl -e "$arrows" "${modules[*]}" "${files[@]}")

# --- ws/ and chat/ pure, unsafe only in io/ --------------------------------------------------
pure_forbidden='libc::|std::net|std::fs|std::thread|Instant::now|SystemTime|std::process|\bunsafe\b'
for dir in src/ws src/chat; do
    [[ -d $dir ]] || continue # a missing layer is reported above
    if hits=$(grep -rnE "$pure_forbidden" "$dir" --include=*.rs --exclude=tests.rs | grep -vE '^\S+:[0-9]+:\s*//'); then
        echo "check-layers: $dir/ must stay pure (no I/O, clock, threads or unsafe):"
        echo "$hits"
        status=1
    fi
done
if hits=$(grep -rnE '\bunsafe\b' src --include=*.rs | grep -v '^src/io/' | grep -vE '^\S+:[0-9]+:\s*//' \
          | grep -v 'deny(unsafe_code)'); then
    echo "check-layers: unsafe code outside src/io/:"
    echo "$hits"
    status=1
fi

if $list; then
    echo "check-layers: arrows found (paths):"
    for arrow in "${!found[@]}"; do
        printf '  %-22s %s\n' "$arrow" "${found[$arrow]}"
    done | LC_ALL=C sort
fi
echo "check-layers: table checked: $table_name"
for layer in "${layers[@]}"; do
    printf '  %-9s -> %s\n' "$layer" "${allowed[$layer]:-(nothing)}"
done
if [ "$status" -eq 0 ]; then
    echo "check-layers: ok ($checked paths to other layers in ${#files[@]} files, all in the table; the table acyclic; every layer present; ws/ and chat/ pure; unsafe only in io/)"
else
    echo "check-layers: FAILED ($forbidden of $checked paths to other layers outside the table, $cycles cycles in the table; see above)"
fi
exit "$status"
