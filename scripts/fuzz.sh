#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh                          # every target, 60 s each
#   scripts/fuzz.sh --seconds 600 frames     # one target, 10 minutes
#
# Needs a nightly toolchain (libFuzzer's coverage instrumentation is nightly-only) and
# cargo-fuzz, which is installed from crates.io when nightly is there but cargo-fuzz is not.
# Each run starts from the committed corpus, copied to a temporary directory so that the
# inputs the fuzzer adds never land in the repository (fuzz/corpus/ stays a small seed set).
# A crashing input is kept in fuzz/artifacts/<target>/ and its path printed.
#
# Exit status: 0 nothing found, 1 a target crashed or failed to build, 2 usage,
# 3 skipped (no nightly toolchain; tests/fuzz_corpus.rs replays the corpus on stable).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=60
targets=()
while (($#)); do
    case $1 in
        --seconds)
            [[ ${2-} =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --seconds needs a number" >&2; exit 2; }
            seconds=$2
            shift 2
            ;;
        -h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option: $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "SKIPPED: fuzzing needs a nightly toolchain (rustup toolchain install nightly);" \
        "cargo test replays the committed corpus on stable (tests/fuzz_corpus.rs)"
    exit 3
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

all_targets=()
for file in fuzz/fuzz_targets/*.rs; do
    all_targets+=("$(basename "$file" .rs)")
done
if ((${#targets[@]} == 0)); then
    targets=("${all_targets[@]}")
fi
for target in "${targets[@]}"; do
    [[ -f fuzz/fuzz_targets/$target.rs ]] || {
        echo "fuzz.sh: no target $target (have: ${all_targets[*]})" >&2
        exit 2
    }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Build first, so that the time budget below is spent fuzzing.
for target in "${targets[@]}"; do
    if ! cargo +nightly fuzz build "$target" >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log"
        echo "FAILED: building fuzz target $target"
        exit 1
    fi
done
status=0
for target in "${targets[@]}"; do
    corpus=$work/corpus-$target
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    cp -R "fuzz/corpus/$target/." "$corpus/"
    # Earlier findings are seeds too: a regression must stay fixed under mutation.
    find "fuzz/regressions/$target" -type f ! -name '.*' ! -name '*.md' \
        -exec cp {} "$corpus/" \; 2>/dev/null || true
    log=$work/$target.log
    before=$(find "fuzz/artifacts/$target" -type f | sort)
    printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
    if cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 3 "$log"
    else
        status=1
        tail -n 40 "$log"
        new=$(comm -13 <(echo "$before") <(find "fuzz/artifacts/$target" -type f | sort))
        echo "FAILED: fuzz target $target; crashing input(s):"
        echo "${new:-  (none written: the target failed before fuzzing; see the log above)}"
        echo "minimize with: cargo +nightly fuzz tmin $target <input>;" \
            "then add it to fuzz/regressions/$target/ with a named test (docs/fuzzing.md)"
    fi
done
exit "$status"
