#!/usr/bin/env bash
# Checks tickwire-io (crates/io) for platforms this Linux machine cannot run natively.
#
#   kqueue family: type-checks the crate, its unit and integration tests included
#   (`cargo check --tests`), for x86_64-apple-darwin, aarch64-apple-darwin and
#   x86_64-unknown-freebsd with `-Zbuild-std` on Debian's Rust 1.63 (rustup's toolchain has no
#   standard library for those targets and cannot fetch one). Nothing is linked or run.
#   windows family: builds the crate's tests for x86_64-pc-windows-gnu (Debian's Rust 1.63 with
#   its Windows standard library, MinGW) and runs them under Wine once per backend (iocp,
#   blocking): scripts/portability-windows.sh.
#
# How and why it works this way was measured on this kind of machine first (the portability
# probe's FINDINGS.md; what it means for users: docs/operations.md, "Running on macOS and
# FreeBSD"). In short: Debian's rustc 1.63 + cargo 1.65 + rust-src, RUSTC_BOOTSTRAP=1,
# `-Z sparse-registry` (cargo 1.65 would clone the index from github.com), a copy of std's
# sources with a pinned Cargo.lock (Debian ships none, and a fresh resolution picks crates that
# need a newer cargo), and the io crate checked alone in a generated workspace with its own
# 1.63-compatible lockfile (libc <= 0.2.183): the workspace's other crates need a newer Rust.
#
# Usage: scripts/portability.sh [FAMILY...]     families: kqueue, windows (default: all)
#        scripts/portability.sh --update-lock   regenerate scripts/portability/io-Cargo.lock
#                                               (rustup's cargo, MSRV-aware resolution)
# Prints one line per target and backend ("x86_64-apple-darwin kqueue: type-check ok",
# "x86_64-pc-windows-gnu iocp: 43 passed") and
# exits non-zero if any check failed. Installs missing Debian packages (root or sudo).
# Everything else it writes lives under $PORTABILITY_DIR (default target/portability), which
# is kept between runs: the first run checks std once per target (about 35 s each on 2 cores),
# later runs take about a second. scripts/test-portability.sh is its self-test.
#
# A target family is one function, family_NAME, that installs what it needs, runs its checks
# and reports each with `result`; add one and list it in FAMILIES.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/scripts/portability"
CACHE="${PORTABILITY_DIR:-$ROOT/target/portability}"
FAMILIES=(kqueue windows)
KQUEUE_TARGETS=(x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd)
# Debian's toolchain: the std lockfile in $PINS is 1.63's.
DEBIAN_RUST_VERSION="1.63."
DEBIAN_RUST_SRC=/usr/lib/rustlib/src/rust/library

log() { printf 'portability: %s\n' "$*" >&2; }

# Records one summary line (families run in subshells, so lines go to a file).
result() { printf '%s\n' "$1" >>"$CACHE/summary"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    log "need root (or sudo) to run: $*"
    return 1
  fi
}

# Installs the Debian packages given that are not installed yet (without Recommends). Waits
# for another apt to finish rather than failing on its lock.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt-get)"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
  as_root "${apt[@]}" update >/dev/null
  as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# The environment of every Debian-cargo command: its own cargo home (registry cache) and
# target dir under $CACHE, Debian's rustc, unstable flags allowed, no RUSTFLAGS from outside
# (the repo's .cargo/config.toml flags are for the server's crypto, not for this check).
debian_cargo_env() {
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
  export CARGO_HOME="$CACHE/cargo-home" CARGO_TARGET_DIR="$CACHE/target"
  export RUSTFLAGS=""
  unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET RUSTC_WRAPPER 2>/dev/null || true
}

# Fails unless /usr/bin/rustc is the release the pinned std lockfile is for.
check_debian_rust() {
  local v
  v="$(/usr/bin/rustc --version)"
  case "$v" in
    "rustc $DEBIAN_RUST_VERSION"*) ;;
    *)
      log "/usr/bin/rustc is '$v'; $PINS/std-1.63-Cargo.lock is for rustc ${DEBIAN_RUST_VERSION}x"
      return 1
      ;;
  esac
}

# A writable copy of Debian's std sources with the pinned lockfile (build-std needs
# <root>/Cargo.lock; cargo appends library/... to the root itself). Recopied only when the
# toolchain or the lockfile changed; copied with their times so cached std builds stay fresh.
prepare_std_sources() {
  local dest="$CACHE/rust-src" stamp
  stamp="$(/usr/bin/rustc --version) $(cksum <"$PINS/std-1.63-Cargo.lock")"
  if [ ! -f "$dest/stamp" ] || [ "$(cat "$dest/stamp")" != "$stamp" ]; then
    log "copying $DEBIAN_RUST_SRC to $dest"
    rm -rf "$dest" && mkdir -p "$dest"
    cp -rp "$DEBIAN_RUST_SRC" "$dest/library"
    cp "$PINS/std-1.63-Cargo.lock" "$dest/Cargo.lock"
    printf '%s' "$stamp" >"$dest/stamp"
  fi
  export __CARGO_TESTS_ONLY_SRC_ROOT="$dest"
}

# Prints one [section] of a TOML file (header included), up to the next header.
toml_section() {
  awk -v h="[$1]" '$0 == h { on = 1; print; next } /^\[/ { on = 0 } on' "$2"
}

# Writes workspace $1 holding a copy of crates/io (manifest, src, tests; times kept, so an
# unchanged crate is not checked again) as its only member. The root manifest takes the
# repo's [workspace.package] and the [workspace.dependencies] entries the crate inherits, so
# the copy builds exactly what the real one declares; the lockfile is the pinned one.
prepare_io_workspace() {
  local ws="$1" crate="$ROOT/crates/io" deps dep line
  mkdir -p "$ws/crates/io"
  rm -rf "$ws/crates/io/src" "$ws/crates/io/tests"
  cp -rp "$crate/src" "$crate/tests" "$ws/crates/io/"
  cp -p "$crate/Cargo.toml" "$ws/crates/io/Cargo.toml"
  deps="$(sed -nE 's/^([A-Za-z0-9_-]+)(\.workspace *= *true| *= *\{ *workspace *= *true).*/\1/p' \
    "$crate/Cargo.toml" | sort -u)"
  {
    echo "# Generated by scripts/portability.sh: tickwire-io alone, for Debian's cargo 1.65."
    echo '[workspace]'
    echo 'resolver = "2"'
    echo 'members = ["crates/io"]'
    echo
    toml_section workspace.package "$ROOT/Cargo.toml"
    echo
    echo '[workspace.dependencies]'
    for dep in $deps; do
      line="$(toml_section workspace.dependencies "$ROOT/Cargo.toml" | grep -E "^$dep *=" || true)"
      [ -n "$line" ] && echo "$line"
    done
  } >"$ws/Cargo.toml.new"
  if cmp -s "$ws/Cargo.toml.new" "$ws/Cargo.toml"; then
    rm "$ws/Cargo.toml.new"
  else
    mv "$ws/Cargo.toml.new" "$ws/Cargo.toml"
  fi
  cp -p "$PINS/io-Cargo.lock" "$ws/Cargo.lock"
}

# `cargo check --tests` of tickwire-io in workspace $1 for target $2 with -Zbuild-std; the
# output goes to $CACHE/logs/$3.log. A warning in the io crate fails the check too (clippy
# never sees these cfg branches on Linux). What failed goes to stderr.
check_io() {
  local ws="$1" target="$2" logname="$3" logfile
  mkdir -p "$CACHE/logs"
  logfile="$CACHE/logs/$logname.log"
  # -Z flags after the subcommand: cargo 1.65 drops some given before it. `test` is built
  # from source too: the test harness of `--tests` needs it.
  if /usr/bin/cargo check -Z sparse-registry -Zbuild-std=std,panic_abort,test \
    --manifest-path "$ws/Cargo.toml" --locked -p tickwire-io --tests --target "$target" \
    >"$logfile" 2>&1; then
    grep -q '^warning: `tickwire-io`' "$logfile" || return 0
    log "$target: tickwire-io has warnings"
  fi
  grep -E -A12 '^(error|warning)' "$logfile" | head -80 >&2 || tail -30 "$logfile" >&2
  if grep -q 'needs to be updated but --locked' "$logfile"; then
    log "the io crate's dependencies changed: run scripts/portability.sh --update-lock"
  fi
  return 1
}

# Shared setup of the families that use Debian's cargo on the io crate alone.
setup_io_check() {
  ensure_packages rustc cargo "$@"
  check_debian_rust
  debian_cargo_env
  prepare_io_workspace "$CACHE/io-ws"
}

# kqueue (macOS, FreeBSD): type-check only, every target in KQUEUE_TARGETS.
family_kqueue() {
  setup_io_check rust-src
  prepare_std_sources
  local t start
  for t in "${KQUEUE_TARGETS[@]}"; do
    start=$SECONDS
    if check_io "$CACHE/io-ws" "$t" "check-$t"; then
      result "$t kqueue: type-check ok"
    else
      result "$t kqueue: type-check FAILED (log: $CACHE/logs/check-$t.log)"
    fi
    log "$t: $((SECONDS - start)) s"
  done
}

# Windows (IOCP): the io crate's tests built for x86_64-pc-windows-gnu with Debian's Rust 1.63
# and MinGW, run under Wine once per backend (iocp, blocking) by scripts/portability-windows.sh,
# which installs what it needs and caches under /var/tmp/tickwire-windows.
family_windows() {
  local out rc=0 line
  out=$("$ROOT/scripts/portability-windows.sh") || rc=$?
  while IFS= read -r line; do
    case "$line" in
      *": "*" passed") result "$line" ;;
      ?*) result "$line (FAILED)" ;;
    esac
  done <<<"$out"
  [ $rc -eq 0 ] || result "x86_64-pc-windows-gnu: FAILED (portability-windows.sh exit $rc)"
}

# Regenerates the pinned io lockfile with rustup's cargo, MSRV-aware (crates/io says
# rust-version = "1.63", so the lockfile stays at version 3 and libc at <= 0.2.183).
update_lock() {
  local ws="$CACHE/lock-ws"
  rm -rf "$ws"
  [ -f "$PINS/io-Cargo.lock" ] || : >"$PINS/io-Cargo.lock"
  prepare_io_workspace "$ws"
  rm -f "$ws/Cargo.lock"
  (cd "$ws" && CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile)
  cp "$ws/Cargo.lock" "$PINS/io-Cargo.lock"
  log "wrote $PINS/io-Cargo.lock"
  grep -A1 -E '^name = "(libc|io-uring)"' "$PINS/io-Cargo.lock" >&2
}

main() {
  if [ "${1:-}" = "--update-lock" ]; then
    update_lock
    return
  fi
  local families=("$@") f rc
  [ ${#families[@]} -eq 0 ] && families=("${FAMILIES[@]}")
  for f in "${families[@]}"; do
    if ! declare -F "family_$f" >/dev/null; then
      log "unknown family '$f' (known: ${FAMILIES[*]})"
      return 2
    fi
  done
  : >"$CACHE/summary"
  for f in "${families[@]}"; do
    # In a subshell with errexit of its own: a failed step ends that family only.
    set +e
    (
      set -e
      "family_$f"
    )
    rc=$?
    set -e
    [ $rc -eq 0 ] || result "$f: FAILED before its checks finished (exit $rc, see above)"
  done
  cat "$CACHE/summary"
  # Every line must say ok.
  ! grep -qv ': type-check ok$\|: [0-9]* passed$' "$CACHE/summary"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  mkdir -p "$CACHE"
  main "$@"
fi
