#!/usr/bin/env bash
# Builds and tests tickwire-io with Debian's Rust 1.63 (the crate's MSRV) against libc 0.2.183,
# the newest libc that builds on 1.63 (the workspace lock may hold a newer one), and io-uring
# 0.7.x (rust-version 1.63; its bitflags/cfg-if resolve MSRV-aware). Manual check,
# not part of .ci/run. Needs root for apt (first run ~15 s of installs); everything else is
# written under /tmp/tw-io-msrv*.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rustc cargo >/dev/null
fi
/usr/bin/rustc --version
work=/tmp/tw-io-msrv
rm -rf "$work" && mkdir -p "$work"
cp -r "$here/src" "$here/tests" "$work/"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "tickwire-io"
version = "0.1.0"
edition = "2021"
rust-version = "1.63"

[dependencies]
libc = "0.2"

[target.'cfg(target_os = "linux")'.dependencies]
io-uring = "0.7"

[workspace]
TOML
cd "$work"
# rustup's cargo resolves MSRV-aware and vendors; Debian's cargo 1.65 then builds offline.
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile
cargo vendor --locked "$work-vendor" >/dev/null
CARGO_HOME="$work-cargo-home" CARGO_TARGET_DIR="$work-target" \
  RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc /usr/bin/cargo test --offline \
  --config 'source.crates-io.replace-with="vv"' --config "source.vv.directory=\"$work-vendor\""
