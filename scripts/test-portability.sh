#!/usr/bin/env bash
# Self-test of scripts/portability.sh: proves that its kqueue type-check compiles the kqueue
# backend for each OS with that OS's own `libc::kevent` and so catches a per-OS type mistake.
#
# `kevent.data` is `isize` (intptr_t) on macOS and `i64` on FreeBSD 12+. Two patched copies of
# crates/io (in their own workspace under $PORTABILITY_DIR; the real sources are not touched)
# each read it as one of the two types:
#   i64:   x86_64-unknown-freebsd must pass, x86_64-apple-darwin must fail with E0308;
#   isize: x86_64-apple-darwin must pass, x86_64-unknown-freebsd must fail with E0308.
# And the unpatched crate must pass for both. Reuses portability.sh's cache: after a first
# portability.sh run it takes seconds. Exits non-zero if any expectation fails.
set -euo pipefail
# shellcheck source=portability.sh
source "$(dirname "${BASH_SOURCE[0]}")/portability.sh"
mkdir -p "$CACHE"

FAIL=0
say() { printf '%s\n' "$*"; }

setup_io_check rust-src
prepare_std_sources

ws="$CACHE/selftest-ws"
anchor='let (filter, flags, data, token) = (ev.filter, ev.flags, ev.data, token_of(ev));'

# Copies crates/io into $ws and, with a type, reads kevent.data as that type in kqueue.rs.
patched_copy() {
  prepare_io_workspace "$ws"
  local file="$ws/crates/io/src/kqueue.rs"
  # The copies keep their sources' times, and cargo only rechecks files newer than its last
  # check: without this, going back to an unpatched copy would not be checked again.
  touch "$file"
  [ -z "${1:-}" ] && return 0
  grep -qF "$anchor" "$file" || {
    say "self-test: the anchor line is gone from kqueue.rs; update scripts/test-portability.sh"
    exit 1
  }
  sed -i "s/$anchor/&\n            let _per_os_bug: $1 = data;/" "$file"
  grep -q "_per_os_bug: $1 = data" "$file"
}

# expect TARGET pass|fail LABEL
expect() {
  local target="$1" want="$2" label="$3" got log
  log="$CACHE/logs/selftest-$label-$target.log"
  if check_io "$ws" "$target" "selftest-$label-$target" 2>/dev/null; then got=pass; else got=fail; fi
  if [ "$got" = fail ] && [ "$want" = fail ] && ! grep -q 'error\[E0308\]: mismatched types' "$log"; then
    say "$label on $target: failed, but not with the expected type error (log: $log)"
    FAIL=1
    return
  fi
  if [ "$got" = "$want" ]; then
    say "$label on $target: ${got}ed as expected"
  else
    say "$label on $target: ${got}ed, expected to ${want} (log: $log)"
    FAIL=1
  fi
}

patched_copy ""
expect x86_64-apple-darwin pass unpatched
expect x86_64-unknown-freebsd pass unpatched

patched_copy i64
expect x86_64-unknown-freebsd pass data-as-i64
expect x86_64-apple-darwin fail data-as-i64

patched_copy isize
expect x86_64-apple-darwin pass data-as-isize
expect x86_64-unknown-freebsd fail data-as-isize

if [ $FAIL -eq 0 ]; then
  say "self-test ok: the type-check catches per-OS kevent mistakes"
else
  say "self-test FAILED"
fi
exit $FAIL
