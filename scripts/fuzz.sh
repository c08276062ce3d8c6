#!/usr/bin/env bash
# Runs every libFuzzer target of every fuzz project (crates/*/fuzz, loadtest/fuzz, ...) for
# SECONDS each, starting from the committed corpus, and prints one line per target:
#
#   target: N runs, T s, corpus K, OK|CRASH|BUILD FAILED
#
# Exits non-zero if any target crashed (panic, failed assertion, timeout, OOM) or failed to
# build. A crashing input is left in that project's fuzz/artifacts/<target>/.
#
# Usage:
#   scripts/fuzz.sh [SECONDS] [TARGET...]   default 60 s per target, all targets
#   scripts/fuzz.sh --list                  print "project target" for every target
#   scripts/fuzz.sh --update-corpus [SECONDS] [TARGET...]
#                                           run, then merge what was found into the committed
#                                           corpus and minimize it (cargo fuzz cmin)
#
# The committed corpus (fuzz/corpus/<target>/) is read-only during a run: new inputs go to
# target/fuzz/corpus/<target>/ (ignored). Builds use whatever toolchain `cargo` is (stable in
# CI) with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags), release with debug assertions and
# overflow checks, AddressSanitizer (its interceptors are what feed memcmp/strcmp operands to
# libFuzzer, so string-gated parsers get past their keywords; FUZZ_SANITIZER=none runs the
# safe-Rust targets 2-4x faster), and one shared target dir, target/fuzz, so the projects
# share dependency builds. Extra libFuzzer flags can be passed in FUZZ_ARGS.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

list=0
update=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --list) list=1; shift ;;
        --update-corpus) update=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
secs=60
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi
only=("$@")

# Fuzz projects: every fuzz/Cargo.toml that marks itself as a cargo-fuzz project.
projects=()
while IFS= read -r f; do
    grep -q 'cargo-fuzz = true' "$f" && projects+=("$(dirname "$f")")
done < <( (git ls-files '*fuzz/Cargo.toml' 2>/dev/null || find . -path ./target -prune -o -path '*/fuzz/Cargo.toml' -print) | sed 's#^\./##' | sort -u)

# Targets of a project: the [[bin]] names in its Cargo.toml.
targets_of() {
    awk '/^\[\[bin\]\]/{b=1; next} /^\[/{b=0} b && /^name *=/{gsub(/.*= *"|".*/, ""); print}' "$1/Cargo.toml"
}

wanted() {
    [[ ${#only[@]} -eq 0 ]] && return 0
    local t
    for t in "${only[@]}"; do [[ "$t" == "$1" ]] && return 0; done
    return 1
}

if [[ $list -eq 1 ]]; then
    for p in "${projects[@]}"; do
        for t in $(targets_of "$p"); do wanted "$t" && echo "$p $t"; done
    done
    exit 0
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2 || { echo "fuzz.sh: cargo install cargo-fuzz failed" >&2; exit 1; }
fi

export RUSTC_BOOTSTRAP=1
tdir="$root/target/fuzz"
san=${FUZZ_SANITIZER:-address}
logs="$tdir/logs"
mkdir -p "$logs"
failed=0
passed=0
crashed=0
start=$(date +%s)

for p in "${projects[@]}"; do
    targets=()
    for t in $(targets_of "$p"); do wanted "$t" && targets+=("$t"); done
    [[ ${#targets[@]} -eq 0 ]] && continue
    if ! (cd "$p" && cargo fuzz build -s "$san" --target-dir "$tdir" >"$logs/build-${p//\//_}.log" 2>&1); then
        tail -n 30 "$logs/build-${p//\//_}.log" >&2
        for t in "${targets[@]}"; do echo "$t: 0 runs, 0 s, corpus 0, BUILD FAILED ($p)"; done
        crashed=$((crashed + ${#targets[@]}))
        failed=1
        continue
    fi
    for t in "${targets[@]}"; do
        corpus="$p/corpus/$t"
        scratch="$tdir/corpus/$t"
        mkdir -p "$corpus" "$scratch"
        log="$logs/$t.log"
        t0=$(date +%s)
        # shellcheck disable=SC2086
        (cd "$p" && cargo fuzz run -s "$san" --target-dir "$tdir" "$t" "$scratch" "corpus/$t" -- \
            -max_total_time="$secs" -timeout=25 -print_final_stats=1 ${FUZZ_ARGS:-}) >"$log" 2>&1
        rc=$?
        el=$(($(date +%s) - t0))
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        [[ -z "$runs" ]] && runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
        took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
        corp=$(grep -oE 'corp: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
        if [[ $rc -eq 0 ]]; then
            echo "$t: ${runs:-0} runs, ${took:-$el} s, corpus ${corp:-0}, OK"
            passed=$((passed + 1))
            if [[ $update -eq 1 ]] && compgen -G "$scratch/*" >/dev/null; then
                cp -n "$scratch"/* "$corpus"/ 2>/dev/null
                (cd "$p" && cargo fuzz cmin -s "$san" --target-dir "$tdir" "$t" "corpus/$t" >"$logs/cmin-$t.log" 2>&1) \
                    || echo "fuzz.sh: cmin of $t failed, see $logs/cmin-$t.log" >&2
            fi
        else
            echo "$t: ${runs:-0} runs, $el s, corpus ${corp:-0}, CRASH (exit $rc; $p/artifacts/$t/, log $log)"
            grep -E -m 5 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | sed 's/^/    /'
            crashed=$((crashed + 1))
            failed=1
        fi
    done
done

echo "fuzz.sh: $(($(date +%s) - start)) s in all"
echo "fuzz: $passed passed, $crashed failed"
exit $failed
